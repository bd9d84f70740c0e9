package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/wire"
)

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop"},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
}

// The same pod injected twice gives byte-identical specs, and the rendered
// bootstrap passes Envoy's own validation (ValidateAll).
func TestInjectIsDeterministic(t *testing.T) {
	a := testPod()
	if err := Inject(a, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b := testPod()
		if err := Inject(b, DefaultConfig()); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(a, b) {
			t.Fatal("two injections of the same pod differ")
		}
	}
	if _, err := Bootstrap(DefaultConfig(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestDecideOrder(t *testing.T) {
	cfg := DefaultConfig()
	on := map[string]string{wire.LabelInject: "enabled"}
	host := testPod()
	host.Spec.HostNetwork = true
	out := testPod()
	out.Labels = map[string]string{wire.LabelInject: "false"}
	done := testPod()
	if err := Inject(done, cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		ns     string
		labels map[string]string
		code   string
		reason string
	}{
		{"kube-system", testPod(), "kube-system", on, ReasonSystemNamespace, "never injected"},
		{"mesh namespace", testPod(), "weft-system", on, ReasonSystemNamespace, "never injected"},
		{"not opted in", testPod(), "shop", nil, ReasonNamespaceNotMesh, "does not have the label"},
		{"opted out", out, "shop", on, ReasonOptedOut, "inject=false"},
		{"host network", host, "shop", on, ReasonHostNetwork, "host's network"},
		{"already injected", done, "shop", on, ReasonAlreadyInjected, "already injected"},
		{"injected", testPod(), "shop", on, "", ""},
	} {
		d := Decide(tc.pod, tc.ns, tc.labels, cfg)
		if d.Inject != (tc.reason == "") || d.Code != tc.code || !strings.Contains(d.Reason, tc.reason) {
			t.Errorf("%s: got %+v, want code %q and reason containing %q", tc.name, d, tc.code, tc.reason)
		}
		if d.Meshless() != (tc.code != "" && tc.code != ReasonAlreadyInjected) {
			t.Errorf("%s: Meshless() is %v", tc.name, d.Meshless())
		}
	}
}

// Every annotation error names its annotation, and all are reported at
// once; the pod is left untouched.
func TestAnnotationErrors(t *testing.T) {
	p := testPod()
	p.Annotations = map[string]string{
		AnnotationExcludeInboundPorts: "80,x", AnnotationProxyMemoryRequest: "1Gi", AnnotationProxyMemoryLimit: "128Mi",
		AnnotationProxyImage: "",
	}
	before := p.DeepCopy()
	err := Inject(p, DefaultConfig())
	if err == nil {
		t.Fatal("invalid annotations accepted")
	}
	for _, w := range []string{AnnotationExcludeInboundPorts, "memory request 1Gi exceeds its limit 128Mi", AnnotationProxyImage} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if !equality.Semantic.DeepEqual(before, p) {
		t.Error("a refused pod was changed")
	}
}

func BenchmarkInject(b *testing.B) {
	cfg := DefaultConfig()
	for b.Loop() {
		p := testPod()
		if err := Inject(p, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
