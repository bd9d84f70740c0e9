package v1alpha1_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// readSamples decodes every document of config/samples/*.yaml except the
// kustomization.
func readSamples(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(env.Root, "config", "samples", "mesh_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	out := map[string][]*unstructured.Unstructured{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) > 0 {
				out[filepath.Base(f)] = append(out[filepath.Base(f)], u)
			}
		}
	}
	return out
}

// TestSamplesAccepted sends every sample through the real API server's
// admission (a server-side dry run), in the namespace the quick start uses.
func TestSamplesAccepted(t *testing.T) {
	ctx := context.Background()
	for _, ns := range []string{"bookinfo", "weft-system"} {
		err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	kinds := map[string]int{}
	for file, objs := range readSamples(t) {
		for _, u := range objs {
			if u.GetNamespace() == "" {
				u.SetNamespace("bookinfo")
			}
			if err := env.Client.Create(ctx, u, client.DryRunAll); err != nil {
				t.Errorf("%s: %s %s: %v", file, u.GetKind(), u.GetName(), err)
			}
			kinds[u.GetKind()]++
		}
	}
	for _, k := range []string{"MeshService", "TrafficPolicy", "PeerAuthentication"} {
		if kinds[k] == 0 {
			t.Errorf("no sample of kind %s", k)
		}
	}
}
