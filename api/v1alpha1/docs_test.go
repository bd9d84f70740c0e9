package v1alpha1_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// schemaPaths lists the field paths under a schema in the notation of
// docs/api.md: "spec.http[].matches[].path.value". It does not descend
// into metav1.Condition, whose fields are Kubernetes'.
func schemaPaths(prefix string, s apiextensionsv1.JSONSchemaProps, out *[]string) {
	if prefix == "status.conditions" {
		return
	}
	if s.Type == "array" && s.Items != nil && s.Items.Schema != nil {
		prefix += "[]"
		s = *s.Items.Schema
	}
	for name, p := range s.Properties {
		path := prefix + "." + name
		*out = append(*out, path)
		schemaPaths(path, p, out)
	}
}

// TestAPIDocsCoverEveryField fails when a field of a CRD is not in
// docs/api.md, so the reference stays complete as the API grows.
func TestAPIDocsCoverEveryField(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(env.Root, "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	crds, err := filepath.Glob(filepath.Join(env.Root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) != 4 {
		t.Fatalf("want 4 CRDs, found %v (%v)", crds, err)
	}
	var missing []string
	for _, f := range crds {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(raw, crd); err != nil {
			t.Fatal(err)
		}
		root := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
		var paths []string
		for _, top := range []string{"spec", "status"} {
			schemaPaths(top, root.Properties[top], &paths)
		}
		if len(paths) < 5 {
			t.Fatalf("%s: only %d fields found; the walk is broken", f, len(paths))
		}
		for _, p := range paths {
			if !strings.Contains(string(doc), "`"+p+"`") {
				missing = append(missing, crd.Spec.Names.Kind+": "+p)
			}
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("docs/api.md does not document %s", m)
	}
}
