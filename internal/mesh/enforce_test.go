package mesh

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// enforceInput is Service web (port 80 on pod port 8080 of pods web-0 and
// web-1) put into the mesh by MeshService web with the given rules.
func enforceInput(allow ...meshv1.AllowRule) Input {
	in := Input{
		Services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}},
		MeshServices: []meshv1.MeshService{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "web", Generation: 1},
			Spec: meshv1.MeshServiceSpec{ServiceName: "web", Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}, Allow: allow}}},
	}
	sl := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}}}
	for i, pod := range []string{"web-0", "web-1"} {
		in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: pod, Labels: map[string]string{"app": "web"}}})
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0." + string(rune('1'+i))},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: pod}})
	}
	in.EndpointSlices = []discoveryv1.EndpointSlice{sl}
	return in
}

// testPeerAuth is a namespace-wide PeerAuthentication of ns.
func testPeerAuth(name string, mode meshv1.MTLSMode) meshv1.PeerAuthentication {
	return meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("pa-" + name), Generation: 1},
		Spec: meshv1.PeerAuthenticationSpec{Mode: mode}}
}

// RulesEnforced: a service that lets everyone in has nothing to enforce;
// rules on endpoints that are not STRICT name each endpoint and what set
// its mode; STRICT endpoints hold them.
func TestRulesEnforced(t *testing.T) {
	productpage := meshv1.AllowRule{From: []meshv1.Source{{Namespace: "ns", ServiceAccount: "productpage"}}}
	for _, c := range []struct {
		name   string
		in     Input
		ok     bool
		reason string
		msg    []string
	}{
		{"no rules", enforceInput(), true, meshv1.ReasonNoRules, nil},
		{"rules without a PeerAuthentication", enforceInput(productpage), false, meshv1.ReasonNotStrict,
			[]string{"its allow rule needs STRICT mTLS, and 2 of 2 endpoints", "10.0.0.1 (pod ns/web-0) port 8080 is PERMISSIVE by no PeerAuthentication", "10.0.0.2 (pod ns/web-1)"}},
		{"rules on PERMISSIVE endpoints", func() Input {
			in := enforceInput(productpage)
			in.PeerAuthentications = []meshv1.PeerAuthentication{testPeerAuth("lenient", meshv1.MTLSPermissive)}
			return in
		}(), false, meshv1.ReasonNotStrict, []string{"PERMISSIVE by PeerAuthentication ns/lenient"}},
		{"default inbound namespace on PERMISSIVE endpoints", func() Input {
			in := enforceInput()
			in.DefaultInbound = wire.DefaultInboundNamespace
			return in
		}(), false, meshv1.ReasonNotStrict, []string{"its default inbound policy (namespace) needs STRICT mTLS"}},
		{"rules on STRICT endpoints", func() Input {
			in := enforceInput(productpage)
			in.PeerAuthentications = []meshv1.PeerAuthentication{testPeerAuth("strict", meshv1.MTLSStrict)}
			return in
		}(), true, meshv1.ReasonStrict, []string{"so its allow rule can tell each caller by its identity"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := Build(c.in).Verdicts[Ref{KindMeshService, "ns", "web"}]
			got := v.RulesEnforced
			if got.OK != c.ok || got.Reason != c.reason {
				t.Fatalf("RulesEnforced %+v, want ok %v reason %s", got, c.ok, c.reason)
			}
			for _, m := range c.msg {
				if !strings.Contains(got.Message, m) {
					t.Errorf("message %q does not say %q", got.Message, m)
				}
			}
		})
	}
}

// Two MeshServices on one pod port: with the same rules nothing
// conflicts; with different rules the port refuses every caller
// (RulesConflict) and both MeshServices name the other.
func TestTwoMeshServicesOnOnePodPort(t *testing.T) {
	productpage := meshv1.AllowRule{From: []meshv1.Source{{Namespace: "ns", ServiceAccount: "productpage"}}}
	build := func(second []meshv1.AllowRule) *Model {
		in := enforceInput(productpage)
		in.PeerAuthentications = []meshv1.PeerAuthentication{testPeerAuth("strict", meshv1.MTLSStrict)}
		// Service web-canary selects the same pods, on its port 9080.
		in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-canary"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}})
		in.MeshServices = append(in.MeshServices, meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-canary", UID: "web-canary", Generation: 1},
			Spec: meshv1.MeshServiceSpec{ServiceName: "web-canary", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolHTTP}}, Allow: second}})
		sl := *in.EndpointSlices[0].DeepCopy()
		sl.Name, sl.Labels = "web-canary", map[string]string{discoveryv1.LabelServiceName: "web-canary"}
		in.EndpointSlices = append(in.EndpointSlices, sl)
		return Build(in)
	}
	// The same rule, limited to the service's own port: the same callers.
	same := build([]meshv1.AllowRule{{From: productpage.From, Ports: []int32{9080}}})
	if same.RulesConflict("ns/web-0", 8080) {
		t.Error("two services with the same rules conflict")
	}
	if v := same.Verdicts[Ref{KindMeshService, "ns", "web-canary"}]; !v.RulesEnforced.OK {
		t.Errorf("web-canary with web's rules: %+v", v.RulesEnforced)
	}

	differ := build([]meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "ns", ServiceAccount: "tester"}}}})
	if !differ.RulesConflict("ns/web-0", 8080) || !differ.RulesConflict("ns/web-1", 8080) {
		t.Error("two services with different rules on one pod port do not conflict")
	}
	for name, other := range map[string]string{"web": "web-canary", "web-canary": "web"} {
		v := differ.Verdicts[Ref{KindMeshService, "ns", name}].RulesEnforced
		if v.OK || v.Reason != meshv1.ReasonRulesConflict || !strings.Contains(v.Message, "port 8080 also serves MeshService "+other+",") {
			t.Errorf("%s: RulesEnforced %+v, want RulesConflict naming %s", name, v, other)
		}
	}
	// No rules on the second: it would let everyone in where web lets in
	// one caller; that differs too.
	if open := build(nil); !open.RulesConflict("ns/web-0", 8080) {
		t.Error("a service without rules beside one with rules does not conflict")
	}
}
