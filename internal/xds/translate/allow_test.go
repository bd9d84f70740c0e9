package translate

import (
	"maps"
	"slices"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// A service without allow rules follows its default inbound policy: no
// RBAC for all, one policy for its namespace's identities, RBAC without
// policies (nobody) for deny; a service with rules ignores the default.
func TestDefaultInboundRules(t *testing.T) {
	p := mesh.Port{Number: 9080}
	if r := allowRules(&mesh.Service{Namespace: "shop", DefaultInbound: wire.DefaultInboundAll}, p, "corp.example", true); r != nil {
		t.Errorf("all: %v, want no RBAC", r)
	}
	ns := allowRules(&mesh.Service{Namespace: "shop", DefaultInbound: wire.DefaultInboundNamespace}, p, "corp.example", false)
	if got := policyNames(ns); !slices.Equal(got, []string{"default-namespace"}) ||
		ns.Policies["default-namespace"].Principals[0].GetAuthenticated().GetPrincipalName().GetPrefix() != "spiffe://corp.example/ns/shop/sa/" {
		t.Errorf("namespace: %v, want one policy for spiffe://corp.example/ns/shop/sa/...", ns)
	}
	if deny := allowRules(&mesh.Service{Namespace: "shop", DefaultInbound: wire.DefaultInboundDeny}, p, "corp.example", true); deny == nil || len(deny.Policies) != 0 {
		t.Errorf("deny: %v, want RBAC without policies", deny)
	}
	withRules := &mesh.Service{Namespace: "shop", DefaultInbound: wire.DefaultInboundDeny,
		Allow: []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "ops"}}}}}
	if got := policyNames(allowRules(withRules, p, "corp.example", true)); !slices.Equal(got, []string{"allow-0"}) {
		t.Errorf("a service with rules: %v, want its rule alone", got)
	}
}

// The model gives each service its namespace's default inbound policy,
// else the mesh's; a label that names no policy denies.
func TestModelDefaultInbound(t *testing.T) {
	in := bookinfo()
	in.DefaultInbound = wire.DefaultInboundNamespace
	for _, tc := range []struct {
		label string
		want  wire.DefaultInbound
	}{{"", wire.DefaultInboundNamespace}, {"all", wire.DefaultInboundAll}, {"deny", wire.DefaultInboundDeny}, {"nobody", wire.DefaultInboundDeny}} {
		in.Namespaces = []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo"}}}
		if tc.label != "" {
			in.Namespaces[0].Labels = map[string]string{wire.LabelDefaultInbound: tc.label}
		}
		m := mesh.Build(in)
		if len(m.Services) == 0 {
			t.Fatal("no services in the model")
		}
		for key, s := range m.Services {
			if s.DefaultInbound != tc.want {
				t.Errorf("label %q: %s follows %q, want %q", tc.label, key, s.DefaultInbound, tc.want)
			}
		}
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
