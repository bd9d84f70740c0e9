// Package hostile makes malformed objects of weft's kinds for tests that
// send them to a real API server: each a valid object broken in one place,
// chosen by a seeded random source, with the field the refusal must name.
//
// Most cases come from the CRD's own schema, walked field by field: a
// value of the wrong type, too long, not matching the pattern, outside the
// enum or the bounds, a list or map too long or too short, a required
// field removed, an unknown field. Others break the CEL rules of each kind
// with random values (rules.go). A few the schema cannot judge (a regular
// expression that does not compile): the API server stores them, and the
// controller's verdict must refuse them, naming the field (Case.Judged).
// Oversized lists every string of a kind at 1 MiB, every list at 10,000
// items and every map at 10,000 entries.
package hostile

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Case is one hostile object and what must become of it.
type Case struct {
	// What says how the valid object was broken.
	What string
	// Object is the whole object to create (apiVersion, kind, metadata,
	// spec), as JSON values.
	Object map[string]any
	// Field is the path that the API server's refusal (or, when Judged,
	// the controller's verdict) must name.
	Field string
	// Judged cases are valid to the schema, which cannot judge them: the
	// API server stores them, and the controller's verdict refuses them
	// (Accepted=False, reason Invalid) naming Field.
	Judged bool
	// Oversized cases hold a 1 MiB string, a 10,000-item list or a
	// 10,000-entry map.
	Oversized bool
}

// Sizes of the oversized inputs.
const (
	HugeString = 1 << 20
	HugeList   = 10000
)

// Kind is one of weft's kinds as the generator knows it.
type Kind struct {
	Name string
	// Schema is the CRD's schema of spec.
	Schema apiextensionsv1.JSONSchemaProps
	// Valid returns a valid object that sets (nearly) every field, so
	// that every field can be broken.
	Valid func() client.Object
	// Rules break the kind's CEL rules, or what only the controller
	// judges, with random values.
	Rules []Rule
}

// Rule breaks a valid object in one way the schema's structure does not
// cover; it returns the field the refusal names.
type Rule struct {
	What string
	// Judged: the API server stores the object and the controller's
	// verdict refuses it.
	Judged bool
	Apply  func(r *rand.Rand, o client.Object) (field string)
}

// Generator makes the cases of each kind from a seeded random source:
// the same seed gives the same cases.
type Generator struct {
	r     *rand.Rand
	kinds map[string]*Kind
	names int
}

// New reads the CRDs in crdDir (config/crd/bases) and returns a generator
// for MeshService, TrafficPolicy and PeerAuthentication.
func New(crdDir string, seed uint64) (*Generator, error) {
	g := &Generator{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), kinds: map[string]*Kind{}}
	for _, k := range kinds() {
		s, err := specSchema(crdDir, k.Name)
		if err != nil {
			return nil, err
		}
		k.Schema = s
		g.kinds[k.Name] = k
	}
	return g, nil
}

// Kinds are the names of the kinds the generator makes.
func (g *Generator) Kinds() []string {
	out := make([]string, 0, len(g.kinds))
	for n := range g.kinds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// specSchema reads the schema of a kind's spec from its CRD.
func specSchema(dir, kind string) (apiextensionsv1.JSONSchemaProps, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return apiextensionsv1.JSONSchemaProps{}, err
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return apiextensionsv1.JSONSchemaProps{}, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(raw, crd); err != nil {
			return apiextensionsv1.JSONSchemaProps{}, fmt.Errorf("%s: %w", f, err)
		}
		if crd.Spec.Names.Kind == kind && len(crd.Spec.Versions) > 0 {
			return crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"], nil
		}
	}
	return apiextensionsv1.JSONSchemaProps{}, fmt.Errorf("no CRD of kind %s in %s", kind, dir)
}

// Cases returns n hostile objects of kind in namespace: about one in ten
// breaks a rule of the kind (rules.go), the rest break its schema.
func (g *Generator) Cases(kind, namespace string, n int) []Case {
	k := g.kinds[kind]
	out := make([]Case, 0, n)
	for range n {
		if len(k.Rules) > 0 && g.r.IntN(10) == 0 {
			out = append(out, g.rule(k, namespace))
			continue
		}
		out = append(out, g.structural(k, namespace))
	}
	return out
}

// Judged returns n objects of kind that only the controller can refuse
// (nil when the schema judges everything of the kind).
func (g *Generator) Judged(kind, namespace string, n int) []Case {
	k := g.kinds[kind]
	var rules []Rule
	for _, r := range k.Rules {
		if r.Judged {
			rules = append(rules, r)
		}
	}
	if len(rules) == 0 {
		return nil
	}
	out := make([]Case, 0, n)
	for range n {
		rule := rules[g.r.IntN(len(rules))]
		o := k.Valid()
		field := rule.Apply(g.r, o)
		out = append(out, Case{What: rule.What, Object: g.object(o, namespace), Field: field, Judged: true})
	}
	return out
}

func (g *Generator) rule(k *Kind, namespace string) Case {
	var rules []Rule
	for _, r := range k.Rules {
		if !r.Judged {
			rules = append(rules, r)
		}
	}
	rule := rules[g.r.IntN(len(rules))]
	o := k.Valid()
	field := rule.Apply(g.r, o)
	return Case{What: rule.What, Object: g.object(o, namespace), Field: field}
}

// object is o as JSON values, named hostile-<n> in namespace.
func (g *Generator) object(o client.Object, namespace string) map[string]any {
	g.names++
	o.SetName("hostile-" + strconv.Itoa(g.names))
	o.SetNamespace(namespace)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		panic(fmt.Sprintf("converting a valid %T: %v", o, err)) // the fixtures are fixed: a bug here, not input
	}
	m["apiVersion"], m["kind"] = "mesh.weft.dev/v1alpha1", kindOf(o)
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return m
}

func kindOf(o client.Object) string {
	t := fmt.Sprintf("%T", o)
	return t[strings.LastIndex(t, ".")+1:]
}

// target is a field of the valid object that a case may break: present in
// it, or absent with its parent present.
type target struct {
	path    []any // string keys and int indices, from spec
	schema  apiextensionsv1.JSONSchemaProps
	present bool
	// inMap: the field is a map's value, whose path the API server may
	// give as the map's.
	inMap bool
}

// fieldPath renders a path as the API server does: "spec.http[0].name".
func fieldPath(path []any) string {
	var b strings.Builder
	b.WriteString("spec")
	for _, p := range path {
		switch p := p.(type) {
		case string:
			b.WriteString("." + p)
		case int:
			b.WriteString("[" + strconv.Itoa(p) + "]")
		}
	}
	return b.String()
}

// reported is the path a refusal of t names: a map value's is the map's.
func (t target) reported() string {
	if t.inMap {
		return fieldPath(t.path[:len(t.path)-1])
	}
	return fieldPath(t.path)
}

// targets walks the valid spec along the schema.
func targets(spec any, s apiextensionsv1.JSONSchemaProps) []target {
	var out []target
	var walk func(v any, s apiextensionsv1.JSONSchemaProps, path []any, present, inMap bool)
	walk = func(v any, s apiextensionsv1.JSONSchemaProps, path []any, present, inMap bool) {
		if len(path) > 0 {
			out = append(out, target{path: slices.Clone(path), schema: s, present: present, inMap: inMap})
		}
		if !present {
			return
		}
		switch s.Type {
		case "object":
			m, _ := v.(map[string]any)
			for _, name := range sortedKeys(s.Properties) {
				cv, ok := m[name]
				walk(cv, s.Properties[name], append(path, name), ok, false)
			}
			if ap := s.AdditionalProperties; ap != nil && ap.Schema != nil {
				for _, key := range sortedKeys(m) {
					walk(m[key], *ap.Schema, append(path, key), true, true)
				}
			}
		case "array":
			items, _ := v.([]any)
			if s.Items != nil && s.Items.Schema != nil {
				for i, it := range items {
					walk(it, *s.Items.Schema, append(path, i), true, false)
				}
			}
		}
	}
	walk(spec, s, nil, true, false)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// structural breaks one field of a valid object against its schema.
func (g *Generator) structural(k *Kind, namespace string) Case {
	obj := g.object(k.Valid(), namespace)
	ts := targets(obj["spec"], k.Schema)
	for {
		t := ts[g.r.IntN(len(ts))]
		if what, field, ok := g.breakField(obj, t); ok {
			return Case{What: what, Object: obj, Field: field}
		}
	}
}

// breakField gives t a value its schema refuses, or removes it when it is
// required; false when no way applies to t.
func (g *Generator) breakField(obj map[string]any, t target) (what, field string, ok bool) {
	s := t.schema
	type way func() (string, string, bool)
	set := func(v any, how string) (string, string, bool) {
		setPath(obj, t.path, v)
		return fmt.Sprintf("%s: %s", fieldPath(t.path), how), t.reported(), true
	}
	var ways []way
	// The wrong type, for every field.
	ways = append(ways, func() (string, string, bool) {
		v := wrongType(g.r, s.Type)
		return set(v, fmt.Sprintf("%T instead of %s", v, s.Type))
	})
	switch s.Type {
	case "string":
		if s.MaxLength != nil {
			ways = append(ways, func() (string, string, bool) {
				n := int(*s.MaxLength) + 1 + g.r.IntN(4*int(*s.MaxLength)+1)
				return set(g.text(n), fmt.Sprintf("%d characters (at most %d)", n, *s.MaxLength))
			})
		}
		if s.MinLength != nil && *s.MinLength > 0 {
			ways = append(ways, func() (string, string, bool) { return set("", "empty") })
		}
		if s.Pattern != "" {
			ways = append(ways, func() (string, string, bool) {
				re := regexp.MustCompile(s.Pattern)
				for range 100 {
					v := g.text(1 + g.r.IntN(40))
					if !re.MatchString(v) {
						return set(v, fmt.Sprintf("%q (not %s)", v, s.Pattern))
					}
				}
				return "", "", false
			})
		}
		if len(s.Enum) > 0 {
			ways = append(ways, func() (string, string, bool) {
				v := g.text(1 + g.r.IntN(12))
				for _, e := range s.Enum {
					if string(e.Raw) == strconv.Quote(v) {
						return "", "", false
					}
				}
				return set(v, fmt.Sprintf("%q (not one of the enum)", v))
			})
		}
	case "integer":
		if s.Minimum != nil {
			ways = append(ways, func() (string, string, bool) {
				v := int64(*s.Minimum) - 1 - g.r.Int64N(1<<31)
				return set(v, fmt.Sprintf("%d (minimum %v)", v, *s.Minimum))
			})
		}
		if s.Maximum != nil {
			ways = append(ways, func() (string, string, bool) {
				v := int64(*s.Maximum) + 1 + g.r.Int64N(1<<40)
				return set(v, fmt.Sprintf("%d (maximum %v)", v, *s.Maximum))
			})
		}
		ways = append(ways, func() (string, string, bool) {
			v := float64(g.r.IntN(1000)) + 0.5
			return set(v, fmt.Sprintf("%v (not a whole number)", v))
		})
	case "array":
		if s.MaxItems != nil && t.present {
			ways = append(ways, func() (string, string, bool) {
				n := int(*s.MaxItems) + 1 + g.r.IntN(int(*s.MaxItems)+1)
				return set(g.items(getPath(obj, t.path), s, n), fmt.Sprintf("%d items (at most %d)", n, *s.MaxItems))
			})
		}
		if s.MinItems != nil && *s.MinItems > 0 {
			ways = append(ways, func() (string, string, bool) { return set([]any{}, "no items") })
		}
		if t.present && (s.XListType != nil && (*s.XListType == "map" || *s.XListType == "set")) {
			ways = append(ways, func() (string, string, bool) {
				items, _ := getPath(obj, t.path).([]any)
				if len(items) == 0 {
					return "", "", false
				}
				return set(append(items, items[g.r.IntN(len(items))]), "an item twice in a "+*s.XListType)
			})
		}
	case "object":
		if t.present {
			for _, req := range s.Required {
				ways = append(ways, func() (string, string, bool) {
					m, _ := getPath(obj, t.path).(map[string]any)
					if _, ok := m[req]; !ok {
						return "", "", false
					}
					delete(m, req)
					p := append(slices.Clone(t.path), req)
					return fmt.Sprintf("%s: removed (required)", fieldPath(p)), fieldPath(p), true
				})
			}
			if len(s.Properties) > 0 {
				ways = append(ways, func() (string, string, bool) {
					m, _ := getPath(obj, t.path).(map[string]any)
					key := "x" + strings.ToLower(g.word(6))
					m[key] = g.text(8)
					p := append(slices.Clone(t.path), key)
					return fmt.Sprintf("%s: an unknown field", fieldPath(p)), fieldPath(p), true
				})
			}
		}
		if s.MaxProperties != nil {
			ways = append(ways, func() (string, string, bool) {
				n := int(*s.MaxProperties) + 1 + g.r.IntN(int(*s.MaxProperties)+1)
				m := map[string]any{}
				for i := range n {
					m["k"+strconv.Itoa(i)] = "v"
				}
				return set(m, fmt.Sprintf("%d entries (at most %d)", n, *s.MaxProperties))
			})
		}
		if s.MinProperties != nil && *s.MinProperties > 0 {
			ways = append(ways, func() (string, string, bool) { return set(map[string]any{}, "no entries") })
		}
	}
	return ways[g.r.IntN(len(ways))]()
}

// items returns n items for a list: copies of the list's own items when it
// has some (a map list's keys made unique, so that length alone is at
// fault), else n short strings.
func (g *Generator) items(cur any, s apiextensionsv1.JSONSchemaProps, n int) []any {
	have, _ := cur.([]any)
	out := make([]any, 0, n)
	for i := range n {
		if len(have) == 0 {
			out = append(out, "v"+strconv.Itoa(i))
			continue
		}
		it := deepCopy(have[i%len(have)])
		if b, _ := json.Marshal(it); len(b)*n > 3<<19 && s.Items != nil && s.Items.Schema != nil {
			// Copies would take the request past the API server's size
			// limit (3 MiB): the least an item may be instead, so that the
			// list's length is what it refuses.
			it = minimal(*s.Items.Schema)
		}
		if m, ok := it.(map[string]any); ok {
			for _, key := range s.XListMapKeys {
				switch m[key].(type) {
				case string:
					m[key] = "k" + strconv.Itoa(i)
				case int64, float64, int:
					m[key] = int64(1 + i%65535)
				}
			}
		}
		out = append(out, it)
	}
	return out
}

// minimal is the smallest value of a schema: an object with its required
// fields only, the first value of an enum, the minimum of a number.
func minimal(s apiextensionsv1.JSONSchemaProps) any {
	switch s.Type {
	case "object":
		m := map[string]any{}
		for _, req := range s.Required {
			m[req] = minimal(s.Properties[req])
		}
		if s.MinProperties != nil && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
			for i := range *s.MinProperties {
				m["k"+strconv.Itoa(int(i))] = minimal(*s.AdditionalProperties.Schema)
			}
		}
		return m
	case "array":
		out := []any{}
		if s.MinItems != nil && s.Items != nil && s.Items.Schema != nil {
			for range *s.MinItems {
				out = append(out, minimal(*s.Items.Schema))
			}
		}
		return out
	case "integer":
		if s.Minimum != nil {
			return int64(*s.Minimum)
		}
		return int64(1)
	case "boolean":
		return false
	}
	if len(s.Enum) > 0 {
		var v string
		if err := json.Unmarshal(s.Enum[0].Raw, &v); err == nil {
			return v
		}
	}
	return "a"
}

// Oversized returns, for every field of kind, the valid object with that
// field at 1 MiB (a string), 10,000 items (a list) or 10,000 entries (a
// map); the refusal must name the field.
func (g *Generator) Oversized(kind, namespace string) []Case {
	k := g.kinds[kind]
	var out []Case
	probe := g.object(k.Valid(), namespace)
	for _, t := range targets(probe["spec"], k.Schema) {
		obj := g.object(k.Valid(), namespace)
		var what string
		switch t.schema.Type {
		case "string":
			setPath(obj, t.path, strings.Repeat("a", HugeString))
			what = "a 1 MiB string"
		case "array":
			setPath(obj, t.path, g.items(getPath(obj, t.path), t.schema, HugeList))
			what = "10,000 items"
		case "object":
			if t.schema.AdditionalProperties == nil {
				continue
			}
			m := make(map[string]any, HugeList)
			for i := range HugeList {
				m["k"+strconv.Itoa(i)] = "v"
			}
			setPath(obj, t.path, m)
			what = "10,000 entries"
		default:
			continue
		}
		out = append(out, Case{What: fieldPath(t.path) + ": " + what, Object: obj, Field: t.reported(), Oversized: true})
	}
	return out
}

// alphabet is what hostile text is made of: letters, digits, separators,
// control characters, quotes, regular-expression and template syntax,
// accents, CJK, emoji, a right-to-left override and a zero-width space.
var alphabet = []string{
	"a", "Z", "0", "9", "-", ".", "/", "_", " ", "\t", "\n", "\x00", "\x7f", "é", "ß", "漢", "🙂", "\u202e", "\u200b",
	"%", "$", "{", "}", "(", ")", "[", "]", "*", "+", "?", "\\", "\"", "'", "`", ";", ":", "@", "#", "!", "&", "|", "<", ">", "=", "~", "^", ",",
}

// text is n characters of hostile text.
func (g *Generator) text(n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(alphabet[g.r.IntN(len(alphabet))])
	}
	return b.String()
}

// word is n lowercase letters.
func (g *Generator) word(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + g.r.IntN(26))
	}
	return string(b)
}

// wrongType is a value of another JSON type than typ.
func wrongType(r *rand.Rand, typ string) any {
	all := map[string][]any{
		"string":  {int64(42), true, map[string]any{"a": int64(1)}, []any{"x"}},
		"integer": {"12", true, []any{int64(1)}, map[string]any{}},
		"boolean": {"yes", int64(1), []any{}},
		"object":  {"x", int64(7), []any{}, true},
		"array":   {"x", map[string]any{"a": "b"}, int64(3)},
	}
	vs, ok := all[typ]
	if !ok {
		vs = all["object"]
	}
	return vs[r.IntN(len(vs))]
}

// getPath and setPath read and write a value under spec.
func getPath(obj map[string]any, path []any) any {
	cur := obj["spec"]
	for _, p := range path {
		switch p := p.(type) {
		case string:
			m, _ := cur.(map[string]any)
			cur = m[p]
		case int:
			l, _ := cur.([]any)
			if p >= len(l) {
				return nil
			}
			cur = l[p]
		}
	}
	return cur
}

func setPath(obj map[string]any, path []any, v any) {
	parent := getPath(obj, path[:len(path)-1])
	switch p := path[len(path)-1].(type) {
	case string:
		parent.(map[string]any)[p] = v
	case int:
		parent.([]any)[p] = v
	}
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopy(x)
		}
		return out
	}
	return v
}
