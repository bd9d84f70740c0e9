package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

// writeStatus applies the reconciler's conditions and endpoint counts, then
// Ready.
func (r *MeshServiceReconciler) writeStatus(ctx context.Context, s *meshServiceScope) error {
	ms := s.ms
	conds := withStalled(meshServiceAccepted(s), meshServiceResolvedRefs(s))
	_, err := r.Status.Apply(ctx, ms, ms.Status.Conditions,
		map[string]any{"observedGeneration": ms.Status.ObservedGeneration, "endpoints": ms.Status.Endpoints},
		status.Update{
			OwnedTypes: reconcilerConditions,
			Conditions: conds,
			Fields:     map[string]any{"observedGeneration": ms.Generation, "endpoints": countEndpoints(s.slices)},
		})
	if err != nil {
		return err
	}
	p := countProxies(r.Proxies, "MeshService", ms)
	return applyReady(ctx, r.Readiness, ms, ms.Status.Conditions, readyCondition(ms.Generation, conds, p),
		map[string]any{"proxies": ms.Status.Proxies},
		map[string]any{"proxies": meshv1.ProxyCounts{Total: int32(p.total), Synced: int32(p.synced)}})
}

// meshServiceAccepted: a MeshService is accepted unless an older one claims
// the same Service or a regular expression in it does not compile.
func meshServiceAccepted(s *meshServiceScope) metav1.Condition {
	ms := s.ms
	gen := ms.Generation
	if winner := oldestFirst(s.claimants); len(winner) > 0 && winner[0].Name != ms.Name {
		return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonConflicted, fmt.Sprintf(
			"MeshService %q already puts Service %q into the mesh and is older; delete one of the two or change spec.serviceName",
			winner[0].Name, ms.Spec.ServiceName), gen)
	}
	for i, rule := range ms.Spec.Allow {
		for j := range rule.Paths {
			if err := checkPathMatch(fmt.Sprintf("spec.allow[%d].paths[%d]", i, j), &rule.Paths[j]); err != nil {
				return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonInvalid, err.Error(), gen)
			}
		}
	}
	return trueCondition(meshv1.ConditionAccepted, meshv1.ReasonAccepted, "The MeshService is valid", gen)
}

// meshServiceResolvedRefs: the Service must exist and have every port that
// spec.ports lists.
func meshServiceResolvedRefs(s *meshServiceScope) metav1.Condition {
	ms := s.ms
	gen := ms.Generation
	if s.svc == nil {
		return falseCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonServiceNotFound, fmt.Sprintf(
			"spec.serviceName: Service %q does not exist in namespace %q; create it or correct spec.serviceName",
			ms.Spec.ServiceName, ms.Namespace), gen)
	}
	have := make([]string, 0, len(s.svc.Spec.Ports))
	for _, p := range s.svc.Spec.Ports {
		have = append(have, strconv.Itoa(int(p.Port)))
	}
	for i, p := range ms.Spec.Ports {
		if !slices.ContainsFunc(s.svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == p.Port }) {
			return falseCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonPortNotFound, fmt.Sprintf(
				"spec.ports[%d].port: Service %q has no port %d (its ports: %s)",
				i, ms.Spec.ServiceName, p.Port, strings.Join(have, ", ")), gen)
		}
	}
	return trueCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonResolvedRefs, fmt.Sprintf(
		"Service %q found with all %d listed ports", ms.Spec.ServiceName, len(ms.Spec.Ports)), gen)
}

// countEndpoints counts a Service's endpoints across its slices. An
// endpoint that appears in several slices (one per address family) counts
// once. An endpoint without a ready condition counts as ready, as the
// EndpointSlice API says.
func countEndpoints(slices []discoveryv1.EndpointSlice) meshv1.EndpointCounts {
	seen := map[string]bool{}
	var c meshv1.EndpointCounts
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			key := endpointKey(ep)
			if key == "" || seen[key] {
				continue
			}
			seen[key] = true
			c.Total++
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				c.Ready++
			}
		}
	}
	return c
}

func endpointKey(ep discoveryv1.Endpoint) string {
	if ep.TargetRef != nil && ep.TargetRef.UID != "" {
		return "uid/" + string(ep.TargetRef.UID)
	}
	if len(ep.Addresses) > 0 {
		return "addr/" + ep.Addresses[0]
	}
	return ""
}
