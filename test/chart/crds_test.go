package chart_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestChartCRDsAreTheGeneratedOnes fails when the chart's CRDs are not
// byte-for-byte config/crd/bases (run make manifests, which copies them),
// and when the rendered CRDs differ from them in anything but the labels
// and the keep annotation that the chart adds.
func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	generated := yamlFiles(t, filepath.Join(root, "config", "crd", "bases"))
	inChart := yamlFiles(t, filepath.Join(root, "charts", "weft", "files", "crds"))
	if !slices.Equal(names(generated), names(inChart)) {
		t.Fatalf("charts/weft/files/crds holds %v, config/crd/bases %v: run make manifests", names(inChart), names(generated))
	}
	for name, want := range generated {
		if !bytes.Equal(inChart[name], want) {
			t.Errorf("charts/weft/files/crds/%s differs from config/crd/bases/%s: run make manifests", name, name)
		}
	}

	tl := newTools(t, env)
	rendered := decode(t, tl.mustRender(t))
	seen := 0
	for _, o := range rendered {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		seen++
		got := typed[apiextensionsv1.CustomResourceDefinition](t, o)
		if got.Annotations["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s: no helm.sh/resource-policy: keep; helm uninstall would delete every %s", got.Name, got.Spec.Names.Kind)
		}
		var want apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(generated[got.Spec.Group+"_"+got.Spec.Names.Plural+".yaml"], &want); err != nil {
			t.Fatalf("CRD %s: %v", got.Name, err)
		}
		if !equality.Semantic.DeepEqual(got.Spec, want.Spec) {
			t.Errorf("CRD %s: the rendered spec is not config/crd/bases'", got.Name)
		}
	}
	if seen != len(generated) {
		t.Errorf("the chart rendered %d CRDs, config/crd/bases has %d", seen, len(generated))
	}

	// crds.install=false renders none; crds.keep=false drops the policy.
	for _, o := range decode(t, tl.mustRender(t, "crds.install=false")) {
		if o.GetKind() == "CustomResourceDefinition" {
			t.Errorf("crds.install=false still renders CRD %s", o.GetName())
		}
	}
	for _, o := range decode(t, tl.mustRender(t, "crds.keep=false")) {
		if _, ok := o.GetAnnotations()["helm.sh/resource-policy"]; ok {
			t.Errorf("crds.keep=false: %s %s still has the keep policy", o.GetKind(), o.GetName())
		}
	}
}

func yamlFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	if len(files) == 0 {
		t.Fatalf("no CRD in %s", dir)
	}
	return files
}

func names(m map[string][]byte) []string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}
