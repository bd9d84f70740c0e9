package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

func (r *PeerAuthenticationReconciler) writeStatus(ctx context.Context, s *peerAuthScope) error {
	pa := s.pa
	conds := withStalled(peerAuthAccepted(s), peerAuthResolvedRefs(s))
	_, err := r.Status.Apply(ctx, pa, pa.Status.Conditions,
		map[string]any{"observedGeneration": pa.Status.ObservedGeneration, "scope": pa.Status.Scope, "workloads": pa.Status.Workloads},
		status.Update{
			OwnedTypes: reconcilerConditions,
			Conditions: conds,
			Fields:     map[string]any{"observedGeneration": pa.Generation, "scope": s.scope, "workloads": int32(len(s.pods))},
		})
	if err != nil {
		return err
	}
	// mTLS is not in proxy configuration yet: no proxy waits for it.
	return applyReady(ctx, r.Readiness, pa, pa.Status.Conditions, readyCondition(pa.Generation, conds, proxyCounts{}), nil, nil)
}

// peerAuthAccepted: the selector must parse, and no older policy of the
// same scope may cover the same workloads.
func peerAuthAccepted(s *peerAuthScope) metav1.Condition {
	pa := s.pa
	gen := pa.Generation
	if s.selectorErr != nil {
		return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonInvalid, "spec.selector: "+s.selectorErr.Error(), gen)
	}
	for _, peer := range oldestFirst(s.peers) {
		if peer.Name == pa.Name {
			break
		}
		if msg := peerConflict(s, peer); msg != "" {
			return falseCondition(meshv1.ConditionAccepted, meshv1.ReasonConflicted, msg, gen)
		}
	}
	return trueCondition(meshv1.ConditionAccepted, meshv1.ReasonAccepted,
		fmt.Sprintf("The PeerAuthentication is valid and applies to its %s scope", s.scope), gen)
}

// peerConflict says why an older peer conflicts with the policy, or "" when
// it does not.
func peerConflict(s *peerAuthScope, peer *meshv1.PeerAuthentication) string {
	pa := s.pa
	if (pa.Spec.Selector == nil) != (peer.Spec.Selector == nil) {
		return ""
	}
	if pa.Spec.Selector == nil {
		what := "namespace " + pa.Namespace
		if s.scope == meshv1.ScopeMesh {
			what = "the whole mesh"
		}
		return fmt.Sprintf("PeerAuthentication %q is older and already covers %s; delete one of the two or give this one a selector", peer.Name, what)
	}
	if equality.Semantic.DeepEqual(pa.Spec.Selector, peer.Spec.Selector) {
		return fmt.Sprintf("PeerAuthentication %q is older and has the same selector; delete one of the two", peer.Name)
	}
	if pod := sharedPod(s.pods, s.peerPods[peer.Name]); pod != "" {
		return fmt.Sprintf("PeerAuthentication %q is older and also selects pod %q; make the selectors disjoint", peer.Name, pod)
	}
	return ""
}

func sharedPod(a, b []corev1.Pod) string {
	names := make(map[string]bool, len(a))
	for _, p := range a {
		names[p.Name] = true
	}
	for _, p := range b {
		if names[p.Name] {
			return p.Name
		}
	}
	return ""
}

// peerAuthResolvedRefs: a PeerAuthentication names no other object; its
// selector resolves to the pods it covers, which the message counts.
func peerAuthResolvedRefs(s *peerAuthScope) metav1.Condition {
	return trueCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonResolvedRefs,
		fmt.Sprintf("The policy covers %d pods", len(s.pods)), s.pa.Generation)
}
