package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// Caller is a workload that calls services, known by its mesh identity:
// the namespace and ServiceAccount its pod runs as. The zero Caller is
// anonymous (a workload weft knows no identity of): it may call only what
// lets every caller in.
type Caller struct {
	Namespace, ServiceAccount string
}

// Anonymous says whether the caller has no mesh identity.
func (c Caller) Anonymous() bool { return c.Namespace == "" || c.ServiceAccount == "" }

// ID is the caller's SPIFFE ID in a trust domain ("" when anonymous).
func (c Caller) ID(trustDomain string) string {
	if c.Anonymous() {
		return ""
	}
	return wire.SPIFFEID(trustDomain, c.Namespace, c.ServiceAccount)
}

// CallerOf is the mesh identity a pod ("<namespace>/<name>") runs as, by
// the model; anonymous when the model does not know the pod.
func (m *Model) CallerOf(pod string) Caller { return m.Callers[pod] }

// MayCall says whether a service lets a caller in on at least one of its
// ports, by the rules its sidecars' and servers' RBAC enforces
// (translate's allowRules): a service without allow rules follows its
// default inbound policy (all lets in everyone, namespace the identities
// of its own namespace, deny nobody); otherwise some rule that applies to
// one of its ports must name the caller.
func (m *Model) MayCall(c Caller, s *Service) bool {
	if len(s.Allow) == 0 {
		switch s.DefaultInbound {
		case wire.DefaultInboundNamespace:
			return !c.Anonymous() && c.Namespace == s.Namespace
		case wire.DefaultInboundDeny:
			return false
		}
		return true
	}
	if c.Anonymous() {
		// Rules name callers by the SPIFFE ID of their certificate.
		return false
	}
	for _, r := range s.Allow {
		if !appliesToSomePort(r, s) {
			continue
		}
		for _, src := range r.From {
			if SourceAdmits(src, c, m.TrustDomain) {
				return true
			}
		}
	}
	return false
}

// appliesToSomePort says whether a rule can let anything in: it names one
// of the service's ports (or all), and when it asks for paths or methods,
// one of those ports carries requests.
func appliesToSomePort(r meshv1.AllowRule, s *Service) bool {
	requests := len(r.Paths) > 0 || len(r.Methods) > 0
	for _, p := range s.Ports {
		if len(r.Ports) > 0 && !slices.Contains(r.Ports, p.Number) {
			continue
		}
		if !requests || p.Protocol.IsHTTP() {
			return true
		}
	}
	return false
}

// SourceAdmits says whether one source of an allow rule names a caller:
// its full SPIFFE ID, its namespace and ServiceAccount, its namespace, or
// ("*") any identity of the trust domain. translate's principals is the
// same rule as RBAC principals.
func SourceAdmits(src meshv1.Source, c Caller, trustDomain string) bool {
	if c.Anonymous() {
		return false
	}
	switch {
	case src.Identity != "":
		return src.Identity == c.ID(trustDomain)
	case src.Namespace == "*":
		return true
	case src.ServiceAccount != "":
		return src.Namespace == c.Namespace && src.ServiceAccount == c.ServiceAccount
	}
	return src.Namespace == c.Namespace
}

// Scope is what one caller's proxy is given: the services it may call,
// and the services their routes mirror to (a route names its mirror's
// cluster, so the mirror comes with it). Callers whose scopes list the
// same services share one ID.
type Scope struct {
	// ID names the scope: "all" when it holds every service of the
	// model, else a digest of Services.
	ID string
	// Services are keys of Model.Services, in Model.Order.
	Services []string
}

// ScopeAll is the ID of the scope that holds every service.
const ScopeAll = "all"

// restrictedServices lists the services that do not let everyone in: those
// with allow rules, or with a default inbound policy other than all.
func (m *Model) restrictedServices() []string {
	var out []string
	for _, key := range m.Order {
		if s := m.Services[key]; !m.MayCall(Caller{}, s) {
			out = append(out, key)
		}
	}
	return out
}

// Everything is the scope that holds every service.
func (m *Model) Everything() Scope { return Scope{ID: ScopeAll, Services: m.Order} }

// ScopeOf returns the scope of a caller. Only the services that do not
// let everyone in (Model.restricted) are judged: a caller that one of
// them refuses is the only kind whose scope is built service by service.
func (m *Model) ScopeOf(c Caller) Scope {
	refused := false
	for _, key := range m.restricted {
		if !m.MayCall(c, m.Services[key]) {
			refused = true
			break
		}
	}
	if !refused {
		return m.Everything()
	}
	in := make(map[string]bool, len(m.Order))
	var queue []string
	for _, key := range m.Order {
		if m.MayCall(c, m.Services[key]) {
			in[key] = true
			queue = append(queue, key)
		}
	}
	// The mirrors of every route in scope, and theirs.
	for len(queue) > 0 {
		s := m.Services[queue[0]]
		queue = queue[1:]
		for _, p := range s.Policies {
			for _, r := range p.Spec.HTTP {
				if r.Mirror == nil {
					continue
				}
				key := Key(s.Namespace, r.Mirror.Name)
				if m.Services[key] != nil && !in[key] {
					in[key] = true
					queue = append(queue, key)
				}
			}
		}
	}
	if len(in) == len(m.Order) {
		return m.Everything()
	}
	out := Scope{Services: make([]string, 0, len(in))}
	for _, key := range m.Order {
		if in[key] {
			out.Services = append(out.Services, key)
		}
	}
	sum := sha256.Sum256([]byte(strings.Join(out.Services, "\n")))
	out.ID = hex.EncodeToString(sum[:10])
	return out
}
