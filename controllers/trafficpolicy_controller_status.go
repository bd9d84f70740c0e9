package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

func (r *TrafficPolicyReconciler) writeStatus(ctx context.Context, s *trafficPolicyScope) error {
	tp := s.tp
	conds := withStalled(trafficPolicyAccepted(s), trafficPolicyResolvedRefs(s))
	_, err := r.Status.Apply(ctx, tp, tp.Status.Conditions,
		map[string]any{"observedGeneration": tp.Status.ObservedGeneration},
		status.Update{
			OwnedTypes: reconcilerConditions,
			Conditions: conds,
			Fields:     map[string]any{"observedGeneration": tp.Generation},
		})
	if err != nil {
		return err
	}
	return applyReady(ctx, r.Readiness, tp, tp.Status.Conditions,
		readyCondition(tp.Generation, conds, countProxies(r.Proxies, "TrafficPolicy", tp)), nil, nil)
}

// trafficPolicyAccepted: the target must exist, no older policy may shape
// the same port of it, and every regular expression must compile.
func trafficPolicyAccepted(s *trafficPolicyScope) metav1.Condition {
	tp := s.tp
	gen := tp.Generation
	if s.target == nil {
		return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonTargetNotFound, targetNotFound(tp), gen)
	}
	for _, rival := range oldestFirst(s.rivals) {
		if rival.Name == tp.Name {
			break
		}
		if portsOverlap(rival.Spec.TargetRef.Port, tp.Spec.TargetRef.Port) {
			return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonConflicted, fmt.Sprintf(
				"TrafficPolicy %q is older and already shapes %s; merge the two policies or give each its own spec.targetRef.port",
				rival.Name, describeTarget(tp.Spec.TargetRef.Name, overlap(rival.Spec.TargetRef.Port, tp.Spec.TargetRef.Port))), gen)
		}
	}
	if err := checkTrafficPolicyRegexes(tp); err != nil {
		return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonInvalid, err.Error(), gen)
	}
	return trueCondition(meshv1.ConditionAccepted, meshv1.ReasonAccepted, "The TrafficPolicy is valid; ResolvedRefs and Ready say whether it is in force", gen)
}

// trafficPolicyResolvedRefs: the target's port, protocol and subsets, and
// every mirror, must exist.
func trafficPolicyResolvedRefs(s *trafficPolicyScope) metav1.Condition {
	tp := s.tp
	gen := tp.Generation
	fail := func(reason, format string, args ...any) metav1.Condition {
		return falseCondition(meshv1.ConditionResolvedRefs, reason, fmt.Sprintf(format, args...), gen)
	}
	if s.target == nil {
		return fail(meshv1.ReasonTargetNotFound, "%s", targetNotFound(tp))
	}
	target := s.target
	ports := target.Spec.Ports
	if p := tp.Spec.TargetRef.Port; p != nil {
		i := slices.IndexFunc(ports, func(mp meshv1.MeshServicePort) bool { return mp.Port == *p })
		if i < 0 {
			return fail(meshv1.ReasonPortNotFound, "spec.targetRef.port: MeshService %q has no port %d (its ports: %s)",
				target.Name, *p, portList(ports))
		}
		ports = ports[i : i+1]
	}
	if field := httpOnlyField(tp); field != "" && !slices.ContainsFunc(ports, func(p meshv1.MeshServicePort) bool { return p.Protocol.IsHTTP() }) {
		return fail(meshv1.ReasonProtocolMismatch, "%s: needs an http, http2 or grpc port, but %s speaks only tcp; "+
			"set the port's protocol in MeshService %q or remove %s", field, describeTarget(target.Name, tp.Spec.TargetRef.Port), target.Name, field)
	}
	for i, route := range tp.Spec.HTTP {
		for j, b := range route.Backends {
			if b.Subset != "" && !hasSubset(target, b.Subset) {
				return fail(meshv1.ReasonSubsetNotFound, "spec.http[%d].backends[%d].subset: MeshService %q has no subset %q (its subsets: %s)",
					i, j, target.Name, b.Subset, subsetList(target))
			}
		}
		if route.Mirror == nil {
			continue
		}
		m := s.mirrors[route.Mirror.Name]
		switch {
		case m == nil:
			return fail(meshv1.ReasonMirrorNotFound, "spec.http[%d].mirror.name: MeshService %q does not exist in namespace %q",
				i, route.Mirror.Name, tp.Namespace)
		case route.Mirror.Subset != "" && !hasSubset(m, route.Mirror.Subset):
			return fail(meshv1.ReasonSubsetNotFound, "spec.http[%d].mirror.subset: MeshService %q has no subset %q (its subsets: %s)",
				i, m.Name, route.Mirror.Subset, subsetList(m))
		}
		for _, p := range ports {
			if p.Protocol.IsHTTP() && !slices.ContainsFunc(m.Spec.Ports, func(mp meshv1.MeshServicePort) bool { return mp.Port == p.Port }) {
				return fail(meshv1.ReasonPortNotFound, "spec.http[%d].mirror.name: MeshService %q has no port %d to mirror to (its ports: %s)",
					i, m.Name, p.Port, portList(m.Spec.Ports))
			}
		}
	}
	return trueCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonResolvedRefs,
		fmt.Sprintf("MeshService %q and every subset and mirror the policy names exist", target.Name), gen)
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
	case tp.Spec.Timeouts != nil && tp.Spec.Timeouts.Request != nil:
		return "spec.timeouts.request"
	}
	return ""
}

func checkTrafficPolicyRegexes(tp *meshv1.TrafficPolicy) error {
	for i, route := range tp.Spec.HTTP {
		for j, m := range route.Matches {
			field := fmt.Sprintf("spec.http[%d].matches[%d]", i, j)
			if err := checkPathMatch(field+".path", m.Path); err != nil {
				return err
			}
			for k, h := range m.Headers {
				if err := checkHeaderMatch(fmt.Sprintf("%s.headers[%d]", field, k), h); err != nil {
					return err
				}
			}
		}
	}
	return nil
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

func portList(ports []meshv1.MeshServicePort) string {
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		out = append(out, strconv.Itoa(int(p.Port))+"/"+string(p.Protocol))
	}
	return strings.Join(out, ", ")
}
