package translate

import (
	"maps"
	"slices"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// TestAllowRules: a MeshService's allow rules become one ALLOW policy per
// rule that applies to the port, naming callers by SPIFFE ID (exactly, or
// by namespace prefix, or the whole trust domain); rules with paths or
// methods do not apply to TCP ports; no rules, no RBAC.
func TestAllowRules(t *testing.T) {
	s := &mesh.Service{Allow: []meshv1.AllowRule{
		{From: []meshv1.Source{{Identity: "spiffe://corp.example/ns/a/sa/b"}}, Ports: []int32{9080}},
		{From: []meshv1.Source{{Namespace: "shop", ServiceAccount: "client"}, {Namespace: "ops"}},
			Paths: []meshv1.PathMatch{{Type: meshv1.MatchPrefix, Value: "/api"}}, Methods: []meshv1.HTTPMethod{"GET"}},
		{From: []meshv1.Source{{Namespace: "*"}}, Ports: []int32{1234}},
	}}
	http := allowRules(s, mesh.Port{Number: 9080}, "corp.example", true)
	if got := policyNames(http); !slices.Equal(got, []string{"allow-0", "allow-1"}) || http.Action != rbacv3.RBAC_ALLOW {
		t.Fatalf("HTTP port 9080: %v %v", http.Action, got)
	}
	if err := http.ValidateAll(); err != nil {
		t.Fatal(err)
	}
	p1 := http.Policies["allow-1"]
	var ids []string
	for _, pr := range p1.Principals {
		m := pr.GetAuthenticated().GetPrincipalName()
		ids = append(ids, m.GetExact()+m.GetPrefix())
	}
	if !slices.Equal(ids, []string{"spiffe://corp.example/ns/shop/sa/client", "spiffe://corp.example/ns/ops/sa/"}) {
		t.Errorf("principals %v", ids)
	}
	and := p1.Permissions[0].GetAndRules().GetRules()
	if len(and) != 2 || and[0].GetUrlPath().GetPath().GetPrefix() != "/api" || and[1].GetHeader().GetStringMatch().GetExact() != "GET" {
		t.Errorf("permissions %v", p1.Permissions)
	}
	if tcp := allowRules(s, mesh.Port{Number: 9080}, "corp.example", false); !slices.Equal(policyNames(tcp), []string{"allow-0"}) {
		t.Errorf("TCP port 9080: %v", policyNames(tcp))
	}
	if other := allowRules(s, mesh.Port{Number: 1234}, "corp.example", true); !slices.Equal(policyNames(other), []string{"allow-1", "allow-2"}) ||
		other.Policies["allow-2"].Principals[0].GetAuthenticated().GetPrincipalName().GetPrefix() != "spiffe://corp.example/" {
		t.Errorf("port 1234: %v", policyNames(other))
	}
	if none := allowRules(s, mesh.Port{Number: 7000}, "corp.example", false); none == nil || len(none.Policies) != 0 {
		t.Errorf("a port no rule lets anyone in: %v, want RBAC without policies (deny all)", none)
	}
	if open := allowRules(&mesh.Service{}, mesh.Port{Number: 9080}, "corp.example", true); open != nil {
		t.Errorf("no allow rules: %v", open)
	}
}

// TestAllowOnInboundListeners: a sidecar's inbound HTTP chain gets the RBAC
// HTTP filter before the router, its TCP chain the network RBAC filter
// before tcp_proxy, and a proxyless server's Listener the RBAC HTTP filter.
func TestAllowOnInboundListeners(t *testing.T) {
	in := bookinfo()
	for i := range in.MeshServices {
		in.MeshServices[i].Spec.Allow = []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "shop"}}}}
	}
	m := mesh.Build(in)
	sh, err := BuildShared(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{"reviews-v1", "mongodb-0"} {
		own, err := Own(sh, Proxy{ID: pod + ".bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/" + pod})
		if err != nil {
			t.Fatal(err)
		}
		chain := own.Listeners[0].FilterChains[0]
		switch cfg := chain.Filters[0].GetTypedConfig(); {
		case cfg.MessageIs(&hcmv3.HttpConnectionManager{}):
			var h hcmv3.HttpConnectionManager
			if err := cfg.UnmarshalTo(&h); err != nil {
				t.Fatal(err)
			}
			var r rbachttpv3.RBAC
			if len(h.HttpFilters) != 2 || h.HttpFilters[0].GetTypedConfig().UnmarshalTo(&r) != nil || len(r.Rules.Policies) != 1 {
				t.Errorf("%s: HTTP filters %v", pod, h.HttpFilters)
			}
		case cfg.MessageIs(&rbacnetv3.RBAC{}):
			if len(chain.Filters) != 2 || chain.Filters[1].Name != "envoy.filters.network.tcp_proxy" {
				t.Errorf("%s: filters %v", pod, chain.Filters)
			}
		default:
			t.Errorf("%s: the first filter is %s, not RBAC", pod, chain.Filters[0].Name)
		}
	}
	own, err := Own(sh, Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourGRPC, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	var h hcmv3.HttpConnectionManager
	if err := own.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	if len(h.HttpFilters) != 2 || h.HttpFilters[0].Name != "envoy.filters.http.rbac" {
		t.Errorf("the proxyless server's filters: %v", h.HttpFilters)
	}
}

// policyNames lists a set of RBAC rules' policy names, sorted.
func policyNames(r *rbacv3.RBAC) []string {
	return slices.Sorted(maps.Keys(r.GetPolicies()))
}
