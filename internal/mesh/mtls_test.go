package mesh

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func inForcePA(ns, name string, created time.Time, spec meshv1.PeerAuthenticationSpec) *meshv1.PeerAuthentication {
	return &meshv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(created)},
		Spec:       spec,
	}
}

// parseSelector parses a PeerAuthentication's selector as the model's
// index does, failing the test when it does not parse.
func parseSelector(t *testing.T) func(*meshv1.PeerAuthentication) labels.Selector {
	return func(pa *meshv1.PeerAuthentication) labels.Selector {
		sel, err := metav1.LabelSelectorAsSelector(pa.Spec.Selector.LabelSelector())
		if err != nil {
			t.Fatal(err)
		}
		return sel
	}
}

// TestModeOf: the narrowest PeerAuthentication in force sets a pod's mode;
// one without a mode inherits from the next wider; port-level overrides
// come from the workload policy, and of two the older counts.
func TestModeOf(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	strict, disable := meshv1.MTLSStrict, meshv1.MTLSDisable
	pas := []*meshv1.PeerAuthentication{
		inForcePA("weft-system", "mesh", t0, meshv1.PeerAuthenticationSpec{Mode: strict}),
		inForcePA("legacy", "default", t0, meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSPermissive}),
		inForcePA("legacy", "db", t0, meshv1.PeerAuthenticationSpec{
			Selector:  &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}},
			PortLevel: []meshv1.PortMTLS{{Port: 5432, Mode: disable}},
		}),
		inForcePA("legacy", "db-newer", t0.Add(time.Hour), meshv1.PeerAuthenticationSpec{
			Selector: &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "db"}}, Mode: strict,
		}),
	}
	p := newPeerAuth(pas, parseSelector(t), "weft-system")
	pod := func(ns string, lbls map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: lbls}}
	}
	for _, c := range []struct {
		name  string
		pod   *corev1.Pod
		mode  meshv1.MTLSMode
		ports map[int32]meshv1.MTLSMode
	}{
		{"mesh-wide", pod("shop", nil), strict, nil},
		{"namespace over mesh", pod("legacy", map[string]string{"app": "web"}), meshv1.MTLSPermissive, nil},
		// The older workload policy wins; it sets no mode, so the
		// namespace's applies, with its port override.
		{"workload, inheriting its mode", pod("legacy", map[string]string{"app": "db"}), meshv1.MTLSPermissive, map[int32]meshv1.MTLSMode{5432: disable}},
	} {
		mode, ports, _ := p.modeOf(c.pod)
		if mode != c.mode || len(ports) != len(c.ports) || ports[5432] != c.ports[5432] {
			t.Errorf("%s: %s %v, want %s %v", c.name, mode, ports, c.mode, c.ports)
		}
	}
	if got := newPeerAuth(nil, parseSelector(t), "weft-system"); got.mesh != nil {
		t.Error("a mesh-wide policy from nothing")
	}
	if mode, _, by := newPeerAuth(nil, parseSelector(t), "weft-system").modeOf(pod("shop", nil)); mode != DefaultMTLS || len(by) != 0 {
		t.Errorf("no policy: %s, want %s", mode, DefaultMTLS)
	}
	e := Endpoint{MTLS: strict, PortMTLS: map[int32]meshv1.MTLSMode{5432: disable}}
	if e.ModeFor(5432) != disable || e.ModeFor(80) != strict || (Endpoint{}).ModeFor(80) != DefaultMTLS {
		t.Error("Endpoint.ModeFor")
	}
}
