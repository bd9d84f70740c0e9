package chart_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestSecondSyncShowsNoDiff is GitOps readiness: once the chart is
// installed and the real weft controller has run against it, syncing the
// same chart again changes nothing. It checks what the tools compare:
//
//   - Argo CD's diff: every field the rendered manifest sets has the same
//     value in the live object (which may have more: defaults), except the
//     paths hack/argocd/ignore-differences.yaml names, which must name
//     something weft really fills;
//   - a server-side apply dry run of the manifest (Flux's drift detection,
//     Argo CD's server-side diff), through kubectl diff --server-side;
//   - helm upgrade with the same values: no object is written.
func TestSecondSyncShowsNoDiff(t *testing.T) {
	e := startEnvWithoutWeftCRDs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tl := newTools(t, e)
	tl.mustHelm(t, "install", "weft", tl.chartDir(), "--namespace", releaseNamespace, "--create-namespace")
	userObjects := applyUserMesh(ctx, t, e, tl)
	t.Run("the controller runs with the chart's arguments", func(t *testing.T) {
		runControllerAsChart(ctx, t, e, "shop", userObjects)
	})

	manifest := tl.mustHelm(t, "get", "manifest", "weft", "--namespace", releaseNamespace)
	rendered := decode(t, manifest)
	rules := readIgnoreRules(t, filepath.Join(e.Root, "hack", "argocd", "ignore-differences.yaml"))
	versions := map[string]string{}
	for _, o := range rendered {
		got, err := live(ctx, e, o)
		if err != nil {
			t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		versions[o.GetKind()+" "+o.GetName()] = got.GetResourceVersion()
		for _, d := range drift(o, got, rules) {
			t.Errorf("a second sync would show a diff: %s", d)
		}
	}
	// Each ignored path names an object of the release and a field that is
	// filled at run time: an entry that matches nothing hides nothing and
	// is stale.
	for _, r := range rules {
		for _, p := range r.paths {
			filled := false
			for _, o := range rendered {
				if !r.matches(o) {
					continue
				}
				got, err := live(ctx, e, o)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range valuesAt(got.Object, p) {
					filled = filled || !reflect.ValueOf(v).IsZero()
				}
			}
			if !filled {
				t.Errorf("ignore-differences.yaml: %s %s %s is not filled in any live object of the release", r.Kind, r.Name, formatPath(p))
			}
		}
	}

	// A server-side apply dry run of the same manifest, by another field
	// manager, as Flux does: kubectl diff exits 1 when it finds a
	// difference, and prints it.
	out, err := tl.kubectl(strings.NewReader(manifest), "diff", "--server-side", "--force-conflicts",
		"--field-manager=gitops", "--namespace", releaseNamespace, "-f", "-")
	if err != nil {
		t.Errorf("kubectl diff --server-side finds a difference: %v\n%s", err, out)
	}

	// The same chart and values again: helm finds nothing to patch.
	tl.mustHelm(t, "upgrade", "weft", tl.chartDir(), "--namespace", releaseNamespace)
	for _, o := range rendered {
		got, err := live(ctx, e, o)
		if err != nil {
			t.Errorf("after the second helm upgrade: %s %s: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		if was := versions[o.GetKind()+" "+o.GetName()]; got.GetResourceVersion() != was {
			t.Errorf("helm upgrade with the same chart and values wrote %s %s (resourceVersion %s, was %s)",
				o.GetKind(), o.GetName(), got.GetResourceVersion(), was)
		}
	}
}

// TestDriftNamesObjectAndPath: the comparison above fails on a field weft
// would change at run time, naming the object and the path; it passes over
// defaults the API server adds, numbers decoded as floats or integers, and
// the ignored caBundle.
func TestDriftNamesObjectAndPath(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	rules := readIgnoreRules(t, filepath.Join(root, "hack", "argocd", "ignore-differences.yaml"))
	rendered := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: weft-injector, labels: {app.kubernetes.io/name: weft}}
webhooks:
- name: inject.mesh.weft.dev
  failurePolicy: Fail
  timeoutSeconds: 5
  clientConfig: {caBundle: "", service: {name: weft-controller, namespace: weft-system, path: /inject-pod}}
  rules: [{operations: [CREATE], resources: [pods]}]
`), &rendered.Object); err != nil {
		t.Fatal(err)
	}
	liveObj := rendered.DeepCopy()
	hook := liveObj.Object["webhooks"].([]any)[0].(map[string]any)
	hook["timeoutSeconds"] = int64(5)                              // an integer, not a float
	hook["clientConfig"].(map[string]any)["caBundle"] = "LS0tLS1C" // filled by weft: ignored
	hook["clientConfig"].(map[string]any)["service"].(map[string]any)["port"] = int64(443)
	hook["matchPolicy"] = "Equivalent" // defaulted by the API server
	liveObj.SetResourceVersion("42")
	if d := drift(rendered, liveObj, rules); len(d) != 0 {
		t.Errorf("defaults, number types and the ignored caBundle show as drift: %v", d)
	}

	hook["failurePolicy"] = "Ignore"
	hook["rules"] = []any{}
	d := drift(rendered, liveObj, rules)
	want := []string{
		`MutatingWebhookConfiguration weft-injector: webhooks[0].failurePolicy: the manifest sets "Fail", the live object has "Ignore"`,
		`MutatingWebhookConfiguration weft-injector: webhooks[0].rules: the manifest sets [{"operations":["CREATE"],"resources":["pods"]}], the live object has []`,
	}
	if !slices.Equal(d, want) {
		t.Errorf("drift:\n%s\nwant:\n%s", strings.Join(d, "\n"), strings.Join(want, "\n"))
	}

	// Without the ignore rules, the caBundle weft fills is drift too.
	d = drift(rendered, liveObj, nil)
	if !slices.Contains(d, `MutatingWebhookConfiguration weft-injector: webhooks[0].clientConfig.caBundle: the manifest sets "", the live object has "LS0tLS1C"`) {
		t.Errorf("caBundle not reported without the ignore rules: %v", d)
	}
	// A label the manifest sets and the live object lost.
	delete(liveObj.Object["metadata"].(map[string]any), "labels")
	if d := drift(rendered, liveObj, rules); !slices.Contains(d, `MutatingWebhookConfiguration weft-injector: metadata.labels: the manifest sets {"app.kubernetes.io/name":"weft"}, the live object has none`) {
		t.Errorf("a lost label not reported: %v", d)
	}

	for expr, want := range map[string]string{
		".webhooks[]?.clientConfig.caBundle": "webhooks[*].clientConfig.caBundle",
		".spec.replicas":                     "spec.replicas",
		".a[2].b[]":                          "a[2].b[*]",
	} {
		p, err := parseJQPath(expr)
		if err != nil || formatPath(p) != want {
			t.Errorf("parseJQPath(%q) = %s, %v; want %s", expr, formatPath(p), err, want)
		}
	}
	for _, expr := range []string{"webhooks", ".a | .b", ".a[] | select(.x)", `.a["b"]`} {
		if p, err := parseJQPath(expr); err == nil {
			t.Errorf("parseJQPath(%q) = %s, want an error (the comparison cannot apply it)", expr, formatPath(p))
		}
	}
}

// ignoreRule is one entry of an Argo CD Application's ignoreDifferences:
// the object it applies to and the paths it ignores ("*" stands for any
// list index).
type ignoreRule struct {
	Group, Kind, Name, Namespace string
	paths                        [][]string
}

func (r ignoreRule) matches(o *unstructured.Unstructured) bool {
	gvk := o.GroupVersionKind()
	return gvk.Group == r.Group && gvk.Kind == r.Kind && (r.Name == "" || o.GetName() == r.Name) &&
		(r.Namespace == "" || o.GetNamespace() == r.Namespace)
}

// readIgnoreRules reads the ignoreDifferences of a file such as
// hack/argocd/ignore-differences.yaml; it fails on anything the comparison
// could not apply as Argo CD does, so that the file and this test cannot
// drift apart.
func readIgnoreRules(t testing.TB, path string) []ignoreRule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		IgnoreDifferences []struct {
			Group             string   `json:"group"`
			Kind              string   `json:"kind"`
			Name              string   `json:"name"`
			Namespace         string   `json:"namespace"`
			JSONPointers      []string `json:"jsonPointers"`
			JQPathExpressions []string `json:"jqPathExpressions"`
			ManagedFieldsMgrs []string `json:"managedFieldsManagers"`
		} `json:"ignoreDifferences"`
	}
	if err := yaml.UnmarshalStrict(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(doc.IgnoreDifferences) == 0 {
		t.Fatalf("%s has no ignoreDifferences", path)
	}
	var rules []ignoreRule
	for _, d := range doc.IgnoreDifferences {
		if len(d.ManagedFieldsMgrs) > 0 {
			t.Fatalf("%s: managedFieldsManagers cannot be compared without Argo CD's field manager data", path)
		}
		r := ignoreRule{Group: d.Group, Kind: d.Kind, Name: d.Name, Namespace: d.Namespace}
		for _, p := range d.JSONPointers {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("%s: JSON pointer %q does not start with /", path, p)
			}
			var segs []string
			for _, s := range strings.Split(p[1:], "/") {
				segs = append(segs, strings.NewReplacer("~1", "/", "~0", "~").Replace(s))
			}
			r.paths = append(r.paths, segs)
		}
		for _, expr := range d.JQPathExpressions {
			segs, err := parseJQPath(expr)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			r.paths = append(r.paths, segs)
		}
		if r.Kind == "" || len(r.paths) == 0 {
			t.Fatalf("%s: an entry without a kind or a path: %+v", path, d)
		}
		rules = append(rules, r)
	}
	return rules
}

var jqStep = regexp.MustCompile(`^(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\]\??|\[([0-9]+)\]\??)`)

// parseJQPath reads the jq path expressions that ignoreDifferences uses
// for a field: .key, [] (every element; ? tolerates a missing list) and
// [n]. Anything else (pipes, select, quoted keys) is refused.
func parseJQPath(expr string) ([]string, error) {
	if !strings.HasPrefix(expr, ".") {
		return nil, fmt.Errorf("jq path %q does not start with a dot", expr)
	}
	var segs []string
	for rest := expr; rest != ""; {
		m := jqStep.FindStringSubmatch(rest)
		if m == nil {
			return nil, fmt.Errorf("jq path %q: cannot read %q (only .key, [] and [n] are understood)", expr, rest)
		}
		switch {
		case m[1] != "":
			segs = append(segs, m[1])
		case m[2] != "":
			segs = append(segs, m[2])
		default:
			segs = append(segs, "*")
		}
		rest = rest[len(m[0]):]
	}
	return segs, nil
}

// drift compares what the rendered object sets with the live object, as
// Argo CD's diff does once the API server has defaulted the live one: a
// field of the manifest whose live value differs is a line naming the
// object, the path and both values. Fields only the live object has
// (defaults, status, metadata the server keeps) are not drift, nor a field
// a rule ignores. Empty maps and lists in the manifest equal missing ones
// (the API server drops them).
func drift(rendered, liveObj *unstructured.Unstructured, rules []ignoreRule) []string {
	var ignored [][]string
	for _, r := range rules {
		if r.matches(rendered) {
			ignored = append(ignored, r.paths...)
		}
	}
	what := rendered.GetKind() + " " + rendered.GetName()
	if ns := rendered.GetNamespace(); ns != "" {
		what = rendered.GetKind() + " " + ns + "/" + rendered.GetName()
	}
	var out []string
	var walk func(want, got any, path []string)
	walk = func(want, got any, path []string) {
		if slices.ContainsFunc(ignored, func(p []string) bool { return pathMatches(p, path) }) {
			return
		}
		report := func() {
			g := "none"
			if got != nil {
				g = jsonText(got)
			}
			out = append(out, fmt.Sprintf("%s: %s: the manifest sets %s, the live object has %s", what, formatPath(path), jsonText(want), g))
		}
		switch w := want.(type) {
		case nil:
			// Not set: the API server drops nulls.
		case map[string]any:
			g, ok := got.(map[string]any)
			if !ok {
				if len(w) != 0 || got != nil {
					report()
				}
				return
			}
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range w {
					if !yield(k) {
						return
					}
				}
			})
			for _, k := range keys {
				walk(w[k], g[k], append(slices.Clip(path), k))
			}
		case []any:
			g, ok := got.([]any)
			if !ok && got != nil || len(g) != len(w) {
				report()
				return
			}
			for i := range w {
				walk(w[i], g[i], append(slices.Clip(path), strconv.Itoa(i)))
			}
		default:
			if !reflect.DeepEqual(want, got) {
				report()
			}
		}
	}
	walk(normalize(rendered.Object), normalize(liveObj.Object), nil)
	return out
}

// normalize round-trips an object through JSON, so that numbers are
// float64 whether they came from YAML or from the API server.
func normalize(o map[string]any) map[string]any {
	b, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}

// pathMatches: path is pattern, or below it; "*" in pattern matches any
// list index.
func pathMatches(pattern, path []string) bool {
	if len(path) < len(pattern) {
		return false
	}
	for i, p := range pattern {
		if p != path[i] && (p != "*" || !isIndex(path[i])) {
			return false
		}
	}
	return true
}

// valuesAt returns the values at a path pattern in an object.
func valuesAt(v any, pattern []string) []any {
	if len(pattern) == 0 {
		return []any{v}
	}
	switch v := v.(type) {
	case map[string]any:
		if next, ok := v[pattern[0]]; ok {
			return valuesAt(next, pattern[1:])
		}
	case []any:
		var out []any
		for i, e := range v {
			if pattern[0] == "*" || pattern[0] == strconv.Itoa(i) {
				out = append(out, valuesAt(e, pattern[1:])...)
			}
		}
		return out
	}
	return nil
}

func isIndex(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// formatPath writes a path as webhooks[0].clientConfig.caBundle, keys
// that are not identifiers quoted (metadata.labels["app.kubernetes.io/name"]).
func formatPath(path []string) string {
	var b strings.Builder
	for _, s := range path {
		switch {
		case s == "*" || isIndex(s):
			b.WriteString("[" + s + "]")
		case identifier.MatchString(s):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		default:
			b.WriteString("[" + strconv.Quote(s) + "]")
		}
	}
	return b.String()
}

// jsonText is a value as JSON, shortened past 200 characters.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
