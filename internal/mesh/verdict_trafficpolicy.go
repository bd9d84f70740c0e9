package mesh

import (
	"fmt"
	"slices"
	"strings"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// trafficPolicyScope is what a TrafficPolicy's verdict depends on.
type trafficPolicyScope struct {
	tp *meshv1.TrafficPolicy
	// target is the targeted MeshService, or nil when it does not exist.
	target *meshv1.MeshService
	// mirrors are the MeshServices that routes mirror to, by name; a
	// missing one is absent.
	mirrors map[string]*meshv1.MeshService
	// rivals are the TrafficPolicies of the namespace (this one included)
	// that target the same MeshService.
	rivals []*meshv1.TrafficPolicy
	// inForce says whether a MeshService of the namespace, by name, is in
	// force in the model (nil: every one that exists is).
	inForce func(name string) bool
}

func (s trafficPolicyScope) refInForce(name string) bool { return s.inForce == nil || s.inForce(name) }

func judgeTrafficPolicy(s trafficPolicyScope) Verdict {
	return Verdict{Generation: s.tp.Generation, Accepted: trafficPolicyAccepted(s), ResolvedRefs: trafficPolicyResolvedRefs(s)}
}

// trafficPolicyAccepted: the target must exist, no older policy may shape
// the same port of it, and every regular expression must compile.
func trafficPolicyAccepted(s trafficPolicyScope) Check {
	tp := s.tp
	if s.target == nil {
		return fail("spec.targetRef.name", meshv1.ReasonTargetNotFound, "%s", targetNotFound(tp))
	}
	for _, rival := range OldestFirst(s.rivals) {
		if rival.Name == tp.Name {
			break
		}
		if portsOverlap(rival.Spec.TargetRef.Port, tp.Spec.TargetRef.Port) {
			return fail("spec.targetRef", meshv1.ReasonConflicted,
				"TrafficPolicy %q is older and already shapes %s; merge the two policies or give each its own spec.targetRef.port",
				rival.Name, describeTarget(tp.Spec.TargetRef.Name, overlap(rival.Spec.TargetRef.Port, tp.Spec.TargetRef.Port)))
		}
	}
	if c, ok := checkTrafficPolicyRegexes(tp); !ok {
		return c
	}
	return pass(meshv1.ReasonAccepted, "The TrafficPolicy is valid; ResolvedRefs and Ready say whether it is in force")
}

// trafficPolicyResolvedRefs: the target's port, protocol and subsets, and
// every mirror, must exist.
func trafficPolicyResolvedRefs(s trafficPolicyScope) Check {
	tp := s.tp
	if s.target == nil {
		return fail("spec.targetRef.name", meshv1.ReasonTargetNotFound, "%s", targetNotFound(tp))
	}
	target := s.target
	ports := target.Spec.Ports
	if p := tp.Spec.TargetRef.Port; p != nil {
		i := slices.IndexFunc(ports, func(mp meshv1.MeshServicePort) bool { return mp.Port == *p })
		if i < 0 {
			return fail("spec.targetRef.port", meshv1.ReasonPortNotFound, "spec.targetRef.port: MeshService %q has no port %d (its ports: %s)",
				target.Name, *p, portList(ports))
		}
		ports = ports[i : i+1]
	}
	if field := httpOnlyField(tp); field != "" && !slices.ContainsFunc(ports, func(p meshv1.MeshServicePort) bool { return p.Protocol.IsHTTP() }) {
		return fail(field, meshv1.ReasonProtocolMismatch, "%s: needs an http, http2 or grpc port, but %s speaks only tcp; "+
			"set the port's protocol in MeshService %q or remove %s", field, describeTarget(target.Name, tp.Spec.TargetRef.Port), target.Name, field)
	}
	for i, route := range tp.Spec.HTTP {
		for j, b := range route.Backends {
			if b.Subset != "" && !hasSubset(target, b.Subset) {
				field := fmt.Sprintf("spec.http[%d].backends[%d].subset", i, j)
				return fail(field, meshv1.ReasonSubsetNotFound, "%s: MeshService %q has no subset %q (its subsets: %s)",
					field, target.Name, b.Subset, subsetList(target))
			}
		}
		if route.Mirror == nil {
			continue
		}
		m := s.mirrors[route.Mirror.Name]
		switch {
		case m == nil:
			field := fmt.Sprintf("spec.http[%d].mirror.name", i)
			return fail(field, meshv1.ReasonMirrorNotFound, "%s: MeshService %q does not exist in namespace %q",
				field, route.Mirror.Name, tp.Namespace)
		case route.Mirror.Subset != "" && !hasSubset(m, route.Mirror.Subset):
			field := fmt.Sprintf("spec.http[%d].mirror.subset", i)
			return fail(field, meshv1.ReasonSubsetNotFound, "%s: MeshService %q has no subset %q (its subsets: %s)",
				field, m.Name, route.Mirror.Subset, subsetList(m))
		}
		for _, p := range ports {
			if p.Protocol.IsHTTP() && !slices.ContainsFunc(m.Spec.Ports, func(mp meshv1.MeshServicePort) bool { return mp.Port == p.Port }) {
				field := fmt.Sprintf("spec.http[%d].mirror.name", i)
				return fail(field, meshv1.ReasonPortNotFound, "%s: MeshService %q has no port %d to mirror to (its ports: %s)",
					field, m.Name, p.Port, portList(m.Spec.Ports))
			}
		}
	}
	// What the policy names exists and fits; what it names must also be in
	// force, or there is nothing to shape or to mirror to.
	if !s.refInForce(target.Name) {
		return fail("spec.targetRef.name", meshv1.ReasonRefNotInForce,
			"spec.targetRef.name: MeshService %q exists but is not in force (its own status says why); the policy applies once it is", target.Name)
	}
	for i, route := range tp.Spec.HTTP {
		if route.Mirror != nil && !s.refInForce(route.Mirror.Name) {
			field := fmt.Sprintf("spec.http[%d].mirror.name", i)
			return fail(field, meshv1.ReasonRefNotInForce, "%s: MeshService %q exists but is not in force (its own status says why), "+
				"so there is nowhere to send copies", field, route.Mirror.Name)
		}
	}
	return pass(meshv1.ReasonResolvedRefs, "MeshService %q and every subset and mirror the policy names exist and are in force", target.Name)
}

func targetNotFound(tp *meshv1.TrafficPolicy) string {
	return fmt.Sprintf("spec.targetRef.name: MeshService %q does not exist in namespace %q; create it or correct spec.targetRef.name",
		tp.Spec.TargetRef.Name, tp.Namespace)
}

// httpOnlyField names the first set field that only HTTP ports can honour,
// or "" when none is set.
func httpOnlyField(tp *meshv1.TrafficPolicy) string {
	switch {
	case len(tp.Spec.HTTP) > 0:
		return "spec.http"
	case tp.Spec.Retries != nil:
		return "spec.retries"
	case tp.Spec.RateLimit != nil:
		return "spec.rateLimit"
	case tp.Spec.Tracing != nil:
		return "spec.tracing"
	case tp.Spec.Timeouts != nil && tp.Spec.Timeouts.Request != nil:
		return "spec.timeouts.request"
	}
	return ""
}

func checkTrafficPolicyRegexes(tp *meshv1.TrafficPolicy) (Check, bool) {
	for i, route := range tp.Spec.HTTP {
		for j, m := range route.Matches {
			field := fmt.Sprintf("spec.http[%d].matches[%d]", i, j)
			if c, ok := checkPathMatch(field+".path", m.Path); !ok {
				return c, false
			}
			for k, h := range m.Headers {
				if c, ok := checkHeaderMatch(fmt.Sprintf("%s.headers[%d]", field, k), h); !ok {
					return c, false
				}
			}
		}
	}
	return Check{}, true
}

// portsOverlap says whether two targetRef ports can name the same port
// (unset means every port).
func portsOverlap(a, b *int32) bool {
	return a == nil || b == nil || *a == *b
}

// overlap returns the port two overlapping targetRef ports share, or nil
// when they share every port.
func overlap(a, b *int32) *int32 {
	if a != nil {
		return a
	}
	return b
}

func describeTarget(name string, port *int32) string {
	if port == nil {
		return fmt.Sprintf("MeshService %q", name)
	}
	return fmt.Sprintf("port %d of MeshService %q", *port, name)
}

func hasSubset(ms *meshv1.MeshService, name string) bool {
	return slices.ContainsFunc(ms.Spec.Subsets, func(s meshv1.Subset) bool { return s.Name == name })
}

func subsetList(ms *meshv1.MeshService) string {
	if len(ms.Spec.Subsets) == 0 {
		return "none"
	}
	names := make([]string, 0, len(ms.Spec.Subsets))
	for _, s := range ms.Spec.Subsets {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}
