package walk_test

import (
	"slices"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// strictRules is the reviews fixture without policies, its port 9080 of
// the given protocol STRICT in bookinfo and with the given allow rules.
func strictRules(protocol meshv1.Protocol, rules ...meshv1.AllowRule) mesh.Input {
	in := reviews("10.1.0.1", "10.1.0.2", 9080, 9080, meshv1.TrafficPolicySpec{})
	in.TrafficPolicies = nil
	in.MeshServices[0].Spec.Ports[0].Protocol = protocol
	in.MeshServices[0].Spec.Allow = rules
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	return in
}

// productpageGETReviews lets bookinfo/productpage GET the prefix /reviews.
var productpageGETReviews = meshv1.AllowRule{
	From:    []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}},
	Paths:   []meshv1.PathMatch{{Type: meshv1.MatchPrefix, Value: "/reviews"}},
	Methods: []meshv1.HTTPMethod{"GET"},
}

// sidecarOf walks reviews-v1's sidecar in a mesh on SDS certificates.
func sidecarOf(t *testing.T, in mesh.Input) *walk.Walker {
	t.Helper()
	_, w := reviewsSidecar(t, mesh.Build(in), translate.Options{EnvoyCerts: translate.EnvoyCertsSDS})
	return w
}

// The inbound walk of a STRICT port with an allow rule (productpage may
// GET /reviews...): only that caller over mTLS, with that method and path,
// reaches the application.
func TestWalkInboundAllowRules(t *testing.T) {
	w := sidecarOf(t, strictRules(meshv1.ProtocolGRPC, productpageGETReviews))
	productpage := walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", "productpage")}
	for _, c := range []struct {
		name    string
		caller  walk.Caller
		method  string
		path    string
		allowed bool
	}{
		{"productpage GET /reviews/1", productpage, "GET", "/reviews/1", true},
		{"productpage POST", productpage, "POST", "/reviews/1", false},
		{"productpage elsewhere", productpage, "GET", "/ratings", false},
		{"another identity", walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", "details")}, "GET", "/reviews/1", false},
		{"another namespace's productpage", walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "shop", "productpage")}, "GET", "/reviews/1", false},
		{"plain text", walk.Caller{}, "GET", "/reviews/1", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := w.SidecarInbound(9080, c.caller, walk.Request{Method: c.method, Path: c.path, Authority: "reviews"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Allowed != c.allowed {
				t.Errorf("allowed %v (%s), want %v", res.Allowed, res.Refused, c.allowed)
			}
			if !c.caller.MTLS && !strings.Contains(res.Refused, "mTLS only") {
				t.Errorf("a plain-text caller refused for %q, want the STRICT port's handshake", res.Refused)
			}
			if res.Allowed && (res.Policy == "" || res.Cluster != translate.InboundClusterName(9080)) {
				t.Errorf("let in by %q to %q, want an allow rule and the inbound cluster", res.Policy, res.Cluster)
			}
		})
	}
}

// On a TCP port the allow rules judge the connection by the caller alone
// (network RBAC ahead of the TCP proxy): the allowed identity reaches the
// inbound cluster, another one, or a plain-text caller, does not.
func TestWalkInboundTCPAllowRules(t *testing.T) {
	w := sidecarOf(t, strictRules(meshv1.ProtocolTCP, meshv1.AllowRule{From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}}}))
	for _, c := range []struct {
		name    string
		caller  walk.Caller
		allowed bool
	}{
		{"productpage", walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", "productpage")}, true},
		{"details", walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", "details")}, false},
		{"plain text", walk.Caller{}, false},
	} {
		res, err := w.SidecarInbound(9080, c.caller, walk.Request{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if res.Allowed != c.allowed {
			t.Errorf("%s: allowed %v (%s), want %v", c.name, res.Allowed, res.Refused, c.allowed)
		}
		if res.Allowed && (res.Policy == "" || res.Cluster != translate.InboundClusterName(9080)) {
			t.Errorf("%s: let in by %q to %q, want an allow rule and the inbound cluster", c.name, res.Policy, res.Cluster)
		}
		if !res.Allowed && c.caller.MTLS && !strings.Contains(res.Refused, "network RBAC") {
			t.Errorf("%s: refused for %q, want the network RBAC", c.name, res.Refused)
		}
	}
}

// reviewsSidecar translates a model for the sidecar of pod
// bookinfo/reviews-v1 and returns the shared resources and a walker of
// the sidecar's whole configuration.
func reviewsSidecar(t *testing.T, m *mesh.Model, opts translate.Options) (*translate.Shared, *walk.Walker) {
	t.Helper()
	sh, err := translate.BuildShared(m, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	own, err := translate.Own(sh, translate.Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	return sh, walk.New(sh.Envoy, own)
}

// Two MeshServices whose allow rules differ on one pod port: the port
// refuses every caller, the one either service names included, rather
// than the first service's rules deciding.
func TestWalkInboundRulesConflict(t *testing.T) {
	in := strictRules(meshv1.ProtocolGRPC, meshv1.AllowRule{From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "productpage"}}})
	// reviews-canary: another Service over the same pods and port.
	canary := *in.Services[0].DeepCopy()
	canary.Name, canary.Spec.ClusterIPs = "reviews-canary", nil
	in.Services = append(in.Services, canary)
	ms := *in.MeshServices[0].DeepCopy()
	ms.Name, ms.UID, ms.Spec.ServiceName = "reviews-canary", "reviews-canary", "reviews-canary"
	ms.Spec.Allow = []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "bookinfo", ServiceAccount: "tester"}}}}
	in.MeshServices = append(in.MeshServices, ms)
	for _, sl := range slices.Clone(in.EndpointSlices) {
		sl = *sl.DeepCopy()
		sl.Name, sl.Labels = "canary-"+sl.Name, map[string]string{discoveryv1.LabelServiceName: "reviews-canary"}
		in.EndpointSlices = append(in.EndpointSlices, sl)
	}
	w := sidecarOf(t, in)
	for _, sa := range []string{"productpage", "tester", "details"} {
		res, err := w.SidecarInbound(9080, walk.Caller{MTLS: true, Principal: wire.SPIFFEID("cluster.local", "bookinfo", sa)},
			walk.Request{Method: "POST", Path: "/weft.test.Reviews/Get", Authority: "reviews"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			t.Errorf("%s let in by %q on a port two services with different rules target", sa, res.Policy)
		}
	}
}
