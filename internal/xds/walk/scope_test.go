package walk_test

import (
	"testing"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
)

// Scoping gives a proxy a service exactly when the service's sidecar lets
// the proxy's identity in: for every form of source and default inbound
// policy, the model's MayCall agrees with the RBAC decision the walker
// reads out of the callee's inbound listener (a PERMISSIVE port, so that
// a plain-text caller reaches the rules as the anonymous caller).
func TestScopeAgreesWithInboundRBAC(t *testing.T) {
	callers := []mesh.Caller{{Namespace: "bookinfo", ServiceAccount: "productpage"}, {Namespace: "bookinfo", ServiceAccount: "details"},
		{Namespace: "shop", ServiceAccount: "productpage"}, {}}
	for _, c := range []struct {
		name  string
		allow []meshv1.Source
		def   string
	}{
		{"default all", nil, "all"},
		{"default namespace", nil, "namespace"},
		{"default deny", nil, "deny"},
		{"service account", []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}}, ""},
		{"namespace", []meshv1.Source{{Namespace: "shop"}}, ""},
		{"every namespace", []meshv1.Source{{Namespace: "*"}}, ""},
		{"identity", []meshv1.Source{{Identity: wire.SPIFFEID("cluster.local", "shop", "productpage")}}, ""},
		{"identity elsewhere", []meshv1.Source{{Identity: wire.SPIFFEID("other.example", "shop", "productpage")}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := reviews("10.1.0.1", "10.1.0.2", 9080, 9080, meshv1.TrafficPolicySpec{})
			if c.allow != nil {
				in.MeshServices[0].Spec.Allow = []meshv1.AllowRule{{From: c.allow}}
			}
			if c.def != "" {
				in.DefaultInbound = wire.DefaultInbound(c.def)
			}
			m := mesh.Build(in)
			_, w := reviewsSidecar(t, m, translate.Options{EnvoyCerts: translate.EnvoyCertsSDS})
			svc := m.Services[m.Order[0]]
			for _, caller := range callers {
				wc := walk.Caller{}
				if !caller.Anonymous() {
					wc = walk.Caller{MTLS: true, Principal: caller.ID("cluster.local")}
				}
				res, err := w.SidecarInbound(9080, wc, walk.Request{Method: "GET", Path: "/", Authority: "reviews"})
				if err != nil {
					t.Fatal(err)
				}
				if got := m.MayCall(caller, svc); got != res.Allowed {
					t.Errorf("caller %+v: MayCall %v, the sidecar's RBAC lets it in: %v (%s)", caller, got, res.Allowed, res.Refused)
				}
				inScope := false
				for _, key := range m.ScopeOf(caller).Services {
					inScope = inScope || key == m.Order[0]
				}
				if inScope != res.Allowed {
					t.Errorf("caller %+v: in scope %v, let in %v", caller, inScope, res.Allowed)
				}
			}
		})
	}
}
