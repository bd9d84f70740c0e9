package mesh

import (
	"slices"
	"testing"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// MayCall follows each form of source, the default inbound policies, the
// rules' ports and request matches, and lets an anonymous caller in only
// where every caller may come.
func TestMayCall(t *testing.T) {
	m := &Model{TrustDomain: "corp.example"}
	checkout := Caller{Namespace: "shop", ServiceAccount: "checkout"}
	cart := Caller{Namespace: "shop", ServiceAccount: "cart"}
	stranger := Caller{Namespace: "lab", ServiceAccount: "checkout"}
	http := []Port{{Number: 80, Protocol: meshv1.ProtocolHTTP}}
	tcp := []Port{{Number: 5432, Protocol: meshv1.ProtocolTCP}}
	rule := func(r meshv1.AllowRule) []meshv1.AllowRule { return []meshv1.AllowRule{r} }
	from := func(src meshv1.Source) []meshv1.AllowRule { return rule(meshv1.AllowRule{From: []meshv1.Source{src}}) }
	for _, c := range []struct {
		name    string
		svc     Service
		callers map[Caller]bool
	}{
		{"no rules, all", Service{Namespace: "shop", Ports: http, DefaultInbound: wire.DefaultInboundAll},
			map[Caller]bool{checkout: true, stranger: true, {}: true}},
		{"no rules, unset means all", Service{Namespace: "shop", Ports: http},
			map[Caller]bool{stranger: true, {}: true}},
		{"no rules, namespace", Service{Namespace: "shop", Ports: http, DefaultInbound: wire.DefaultInboundNamespace},
			map[Caller]bool{checkout: true, cart: true, stranger: false, {}: false}},
		{"no rules, deny", Service{Namespace: "shop", Ports: http, DefaultInbound: wire.DefaultInboundDeny},
			map[Caller]bool{checkout: false, {}: false}},
		{"service account", Service{Namespace: "shop", Ports: http, Allow: from(meshv1.Source{Namespace: "shop", ServiceAccount: "checkout"})},
			map[Caller]bool{checkout: true, cart: false, stranger: false, {}: false}},
		{"namespace", Service{Namespace: "db", Ports: http, Allow: from(meshv1.Source{Namespace: "shop"})},
			map[Caller]bool{checkout: true, cart: true, stranger: false, {}: false}},
		{"every namespace", Service{Namespace: "db", Ports: http, Allow: from(meshv1.Source{Namespace: "*"})},
			map[Caller]bool{checkout: true, stranger: true, {}: false}},
		{"identity", Service{Namespace: "db", Ports: http, Allow: from(meshv1.Source{Identity: "spiffe://corp.example/ns/shop/sa/checkout"})},
			map[Caller]bool{checkout: true, cart: false}},
		{"identity of another trust domain", Service{Namespace: "db", Ports: http, Allow: from(meshv1.Source{Identity: "spiffe://other.example/ns/shop/sa/checkout"})},
			map[Caller]bool{checkout: false}},
		{"rules beat the default", Service{Namespace: "shop", Ports: http, DefaultInbound: wire.DefaultInboundDeny, Allow: from(meshv1.Source{Namespace: "lab"})},
			map[Caller]bool{stranger: true, checkout: false}},
		{"a rule for a port the service lacks", Service{Namespace: "db", Ports: http,
			Allow: rule(meshv1.AllowRule{From: []meshv1.Source{{Namespace: "shop"}}, Ports: []int32{81}})},
			map[Caller]bool{checkout: false}},
		{"a rule for one of its ports", Service{Namespace: "db", Ports: append(slices.Clone(http), tcp...),
			Allow: rule(meshv1.AllowRule{From: []meshv1.Source{{Namespace: "shop"}}, Ports: []int32{5432}})},
			map[Caller]bool{checkout: true}},
		{"paths on a TCP port let nothing in", Service{Namespace: "db", Ports: tcp,
			Allow: rule(meshv1.AllowRule{From: []meshv1.Source{{Namespace: "shop"}}, Methods: []meshv1.HTTPMethod{"GET"}})},
			map[Caller]bool{checkout: false}},
		{"methods on an HTTP port", Service{Namespace: "db", Ports: http,
			Allow: rule(meshv1.AllowRule{From: []meshv1.Source{{Namespace: "shop"}}, Methods: []meshv1.HTTPMethod{"GET"}})},
			map[Caller]bool{checkout: true, stranger: false}},
	} {
		for caller, want := range c.callers {
			if got := m.MayCall(caller, &c.svc); got != want {
				t.Errorf("%s: MayCall(%+v) = %v, want %v", c.name, caller, got, want)
			}
		}
	}
}

// A scope holds what its caller may call and what those services' routes
// mirror to; callers of the same services share its ID, and a caller that
// may call everything gets ScopeAll.
func TestScopeOf(t *testing.T) {
	svc := func(name string, allow ...meshv1.Source) *Service {
		s := &Service{Namespace: "shop", Name: name, Ports: []Port{{Number: 80, Protocol: meshv1.ProtocolHTTP}}}
		if len(allow) > 0 {
			s.Allow = []meshv1.AllowRule{{From: allow}}
		}
		return s
	}
	m := &Model{TrustDomain: "cluster.local", Services: map[string]*Service{
		"shop/open":     svc("open"),
		"shop/payments": svc("payments", meshv1.Source{Namespace: "shop", ServiceAccount: "checkout"}),
		"shop/shadow":   svc("shadow", meshv1.Source{Namespace: "shop", ServiceAccount: "nobody"}),
		"shop/ledger":   svc("ledger", meshv1.Source{Namespace: "shop", ServiceAccount: "nobody"}),
	}}
	m.Order = []string{"shop/ledger", "shop/open", "shop/payments", "shop/shadow"}
	// payments mirrors to shadow, which mirrors to ledger: a checkout
	// proxy needs both clusters though it may not call either.
	m.Services["shop/payments"].Policies = []Policy{{Name: "p", Spec: meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Mirror: &meshv1.Mirror{Name: "shadow"}}}}}}
	m.Services["shop/shadow"].Policies = []Policy{{Name: "s", Spec: meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Mirror: &meshv1.Mirror{Name: "ledger"}}}}}}
	m.restricted = m.restrictedServices() // as Build does
	if want := []string{"shop/ledger", "shop/payments", "shop/shadow"}; !slices.Equal(m.restricted, want) {
		t.Fatalf("restricted services %v, want %v", m.restricted, want)
	}

	checkout := m.ScopeOf(Caller{Namespace: "shop", ServiceAccount: "checkout"})
	if want := []string{"shop/ledger", "shop/open", "shop/payments", "shop/shadow"}; checkout.ID != ScopeAll || !slices.Equal(checkout.Services, want) {
		t.Errorf("checkout's scope %+v, want every service as %q", checkout, ScopeAll)
	}
	cart := m.ScopeOf(Caller{Namespace: "shop", ServiceAccount: "cart"})
	if !slices.Equal(cart.Services, []string{"shop/open"}) || cart.ID == ScopeAll || cart.ID == "" {
		t.Errorf("cart's scope %+v, want only shop/open under a digest", cart)
	}
	if other := m.ScopeOf(Caller{Namespace: "lab", ServiceAccount: "x"}); other.ID != cart.ID {
		t.Errorf("two callers of the same services have scopes %q and %q", other.ID, cart.ID)
	}
	if anon := m.ScopeOf(Caller{}); anon.ID != cart.ID {
		t.Errorf("the anonymous caller's scope %+v, want cart's", anon)
	}
	nobody := m.ScopeOf(Caller{Namespace: "shop", ServiceAccount: "nobody"})
	if nobody.ID == cart.ID || !slices.Equal(nobody.Services, []string{"shop/ledger", "shop/open", "shop/shadow"}) {
		t.Errorf("nobody's scope %+v", nobody)
	}
}
