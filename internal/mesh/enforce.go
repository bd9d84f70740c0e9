package mesh

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// This file judges whether a MeshService's allow rules hold as written. A
// rule names callers by the identity in their mTLS certificate, so every
// endpoint of the service must take mTLS only (STRICT): weft's clients
// speak mTLS only to STRICT endpoints, and a plain-text caller matches no
// rule. And one pod port serves one set of rules: when two MeshServices
// whose rules differ target the same pod port, the port cannot tell which
// service a caller meant, so it refuses every caller (fails closed) and
// both say why, instead of the first one's rules winning.

// podPort is a port of a pod ("<namespace>/<name>").
type podPort struct {
	pod  string
	port int32
}

// RulesConflict says whether two MeshServices with different allow rules
// target a pod's port: then the port refuses every caller.
func (m *Model) RulesConflict(pod string, port int32) bool {
	return len(m.conflicts[podPort{pod, port}]) > 0
}

// findConflicts records, for every pod port that services with different
// rules target, the services involved.
func (m *Model) findConflicts() {
	type claim struct {
		key  string
		port Port
	}
	claims := map[podPort][]claim{}
	for _, key := range m.Order {
		s := m.Services[key]
		for _, p := range s.Ports {
			for e := range s.PodEndpoints() {
				if n, ok := e.PortOf(p); ok && e.Pod != "" {
					pp := podPort{e.Pod, n}
					if !slices.ContainsFunc(claims[pp], func(c claim) bool { return c.key == key }) {
						claims[pp] = append(claims[pp], claim{key, p})
					}
				}
			}
		}
	}
	for pp, cs := range claims {
		for _, c := range cs[1:] {
			if !sameRules(m.Services[cs[0].key], cs[0].port, m.Services[c.key], c.port) {
				if m.conflicts == nil {
					m.conflicts = map[podPort][]string{}
				}
				for _, c := range cs {
					m.conflicts[pp] = append(m.conflicts[pp], c.key)
				}
				break
			}
		}
	}
}

// sameRules says whether two service ports let the same callers in: the
// same default inbound policy when neither has rules, else the same rules
// for the port (a rule's port list names the service's own port numbers,
// so it is compared by whether it applies).
func sameRules(a *Service, ap Port, b *Service, bp Port) bool {
	if len(a.Allow) == 0 && len(b.Allow) == 0 {
		return a.DefaultInbound == b.DefaultInbound
	}
	return reflect.DeepEqual(rulesFor(a, ap), rulesFor(b, bp))
}

// rulesFor are the rules that apply to a port, without their port lists.
func rulesFor(s *Service, p Port) []meshv1.AllowRule {
	var out []meshv1.AllowRule
	for _, r := range s.Allow {
		if len(r.Ports) == 0 || slices.Contains(r.Ports, p.Number) {
			r.Ports = nil
			out = append(out, r)
		}
	}
	return out
}

// judgeEnforcement decides a service's RulesEnforced check.
func (m *Model) judgeEnforcement(s *Service) Check {
	for _, p := range s.Ports {
		for _, e := range s.Endpoints {
			n, ok := e.PortOf(p)
			if !ok || e.Pod == "" {
				continue
			}
			if others := m.conflicts[podPort{e.Pod, n}]; len(others) > 0 {
				var names []string
				for _, k := range others {
					if k != Key(s.Namespace, s.Name) {
						names = append(names, m.Services[k].Name)
					}
				}
				return fail("spec.allow", meshv1.ReasonRulesConflict,
					"pod %s port %d also serves MeshService %s, whose allow rules for it differ; the port refuses every caller until they agree or one of them stops targeting it",
					e.Pod, n, strings.Join(names, ", "))
			}
		}
	}
	if m.MayCall(Caller{}, s) {
		// Only a service without rules whose default policy is all lets
		// the anonymous caller in.
		return pass(meshv1.ReasonNoRules, "The service lets every caller in: it has no allow rules and its default inbound policy is all")
	}
	// What decides who may call: the rules, or the default inbound policy
	// (the namespace's label or the mesh's setting) when there are none.
	what, need := fmt.Sprintf("its %d allow rules", len(s.Allow)), "need"
	switch len(s.Allow) {
	case 0:
		what, need = fmt.Sprintf("its default inbound policy (%s)", s.DefaultInbound), "needs"
	case 1:
		what, need = "its allow rule", "needs"
	}
	var plain []string
	total := 0
	for _, e := range s.Endpoints {
		if e.Pod == "" {
			continue
		}
		total++
		for _, p := range s.Ports {
			n, ok := e.PortOf(p)
			if !ok {
				continue
			}
			if mode := e.ModeFor(n); mode != meshv1.MTLSStrict {
				by := "no PeerAuthentication (PERMISSIVE by default)"
				if r := e.ModeBy; r[0].Kind != "" {
					by = "PeerAuthentication " + r[0].Namespace + "/" + r[0].Name
					if r[1].Kind != "" {
						by += " and " + r[1].Namespace + "/" + r[1].Name
					}
				}
				plain = append(plain, fmt.Sprintf("%s (pod %s) port %d is %s by %s", e.Address, e.Pod, n, mode, by))
				break
			}
		}
	}
	if len(plain) > 0 {
		shown := plain
		if len(shown) > 5 {
			shown = append(slices.Clone(shown[:5]), fmt.Sprintf("and %d more", len(plain)-5))
		}
		return fail("spec.allow", meshv1.ReasonNotStrict,
			"%s %s STRICT mTLS, and %d of %d endpoints are not: %s. weft's clients speak plain text to them, so every caller is refused there, mesh identities included; make them STRICT with a PeerAuthentication",
			what, need, len(plain), total, strings.Join(shown, "; "))
	}
	return pass(meshv1.ReasonStrict, "Every endpoint takes mTLS only, so %s can tell each caller by its identity", what)
}
