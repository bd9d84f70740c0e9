package mesh

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// peerAuthScope is what a PeerAuthentication's verdict depends on.
type peerAuthScope struct {
	pa    *meshv1.PeerAuthentication
	scope meshv1.PeerAuthenticationScope
	// selectorErr says why spec.selector does not parse.
	selectorErr error
	// pods are the pods the policy covers.
	pods []*corev1.Pod
	// peers are the namespace's PeerAuthentications, this one included.
	peers []*meshv1.PeerAuthentication
	// covers says which pods a selector-based peer covers.
	covers func(*meshv1.PeerAuthentication) []*corev1.Pod
}

func judgePeerAuth(s peerAuthScope) Verdict {
	return Verdict{
		Generation: s.pa.Generation,
		Accepted:   peerAuthAccepted(s),
		// A PeerAuthentication names no other object; its selector
		// resolves to the pods it covers, which the message counts.
		ResolvedRefs: pass(meshv1.ReasonResolvedRefs, "The policy covers %d pods", len(s.pods)),
		Scope:        s.scope,
		Workloads:    int32(len(s.pods)),
	}
}

// scopeOf says how wide a PeerAuthentication reaches.
func scopeOf(pa *meshv1.PeerAuthentication, meshNamespace string) meshv1.PeerAuthenticationScope {
	switch {
	case pa.Spec.Selector != nil:
		return meshv1.ScopeWorkload
	case pa.Namespace == meshNamespace:
		return meshv1.ScopeMesh
	default:
		return meshv1.ScopeNamespace
	}
}

// peerAuthAccepted: the selector must parse, and no older policy of the
// same scope may cover the same workloads.
func peerAuthAccepted(s peerAuthScope) Check {
	if s.selectorErr != nil {
		return fail("spec.selector", meshv1.ReasonInvalid, "spec.selector: %s", s.selectorErr)
	}
	for _, peer := range OldestFirst(s.peers) {
		if peer.Name == s.pa.Name {
			break
		}
		if msg := peerConflict(s, peer); msg != "" {
			return fail("spec.selector", meshv1.ReasonConflicted, "%s", msg)
		}
	}
	return pass(meshv1.ReasonAccepted, "The PeerAuthentication is valid and applies to its %s scope", s.scope)
}

// peerConflict says why an older peer conflicts with the policy, or "" when
// it does not.
func peerConflict(s peerAuthScope, peer *meshv1.PeerAuthentication) string {
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
	if pod := sharedPod(s.pods, s.covers(peer)); pod != "" {
		return fmt.Sprintf("PeerAuthentication %q is older and also selects pod %q; make the selectors disjoint", peer.Name, pod)
	}
	return ""
}

func sharedPod(a, b []*corev1.Pod) string {
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

// selecting returns the pods of a namespace that a selector selects.
func (ix index) selecting(namespace string, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range ix.podsIn[namespace] {
		if sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

// peerAuthScope gathers what a PeerAuthentication's verdict depends on.
func (ix index) peerAuthScope(pa *meshv1.PeerAuthentication, meshNamespace string) peerAuthScope {
	s := peerAuthScope{pa: pa, scope: scopeOf(pa, meshNamespace), peers: ix.peerAuths[pa.Namespace]}
	s.covers = func(peer *meshv1.PeerAuthentication) []*corev1.Pod {
		sel := ix.selectors[peer]
		if sel.err != nil {
			return nil
		}
		return ix.selecting(peer.Namespace, sel.sel)
	}
	switch s.scope {
	case meshv1.ScopeMesh:
		for _, ns := range ix.meshed {
			s.pods = append(s.pods, ix.podsIn[ns]...)
		}
	case meshv1.ScopeNamespace:
		s.pods = ix.podsIn[pa.Namespace]
	case meshv1.ScopeWorkload:
		sel := ix.selectors[pa]
		if sel.err != nil {
			s.selectorErr = sel.err
			return s
		}
		s.pods = ix.selecting(pa.Namespace, sel.sel)
	}
	return s
}

// parsedSelector is a PeerAuthentication's spec.selector, parsed once.
type parsedSelector struct {
	sel labels.Selector
	err error
}
