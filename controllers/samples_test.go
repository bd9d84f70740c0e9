package controllers_test

import (
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// Every sample of config/samples/traffic, applied on its own to the
// sample MeshService reviews (subsets v1, v2, v3), becomes Ready and
// Honoured, one after another, each in force alone.
func TestTrafficSamplesBecomeReady(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(env.Root, "config", "samples", "traffic", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no traffic samples: %v", err)
	}
	ns := newNamespace(t, nil)
	create(t, service(ns, "reviews", 9080))
	ms := meshService(ns, "reviews", 9080)
	ms.Spec.Subsets = append(ms.Spec.Subsets, meshv1.Subset{Name: "v3", Labels: map[string]string{"version": "v3"}})
	create(t, ms)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			tp := &meshv1.TrafficPolicy{}
			if err := yaml.UnmarshalStrict(raw, tp); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			tp.Namespace = ns
			create(t, tp)
			waitFor(t, tp,
				want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""},
				want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""},
				synced,
				want{meshv1.ConditionHonoured, metav1.ConditionTrue, meshv1.ReasonHonoured, ""},
			)
			if err := env.Client.Delete(t.Context(), tp); err != nil {
				t.Fatal(err)
			}
		})
	}
}
