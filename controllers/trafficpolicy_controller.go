package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

const (
	// indexPolicyTarget indexes TrafficPolicies by spec.targetRef.name.
	indexPolicyTarget = "spec.targetRef.name"
	// indexPolicyRefs indexes TrafficPolicies by every MeshService they
	// name: the target and the mirrors.
	indexPolicyRefs = "trafficpolicy.refs"
)

// TrafficPolicyReconciler keeps a TrafficPolicy's Accepted and ResolvedRefs
// conditions true to the world: its target MeshService and that service's
// subsets and ports, the MeshServices it mirrors to, and the other
// TrafficPolicies on the same target.
type TrafficPolicyReconciler struct {
	Client    client.Client
	Status    status.Writer
	Readiness status.Writer
	// Proxies, when set, says what the proxies acknowledged; Acks carries
	// the objects to look at again when that changes.
	Proxies ProxyView
	Acks    <-chan event.GenericEvent
}

// trafficPolicyScope is everything one reconcile reads, read once.
type trafficPolicyScope struct {
	tp *meshv1.TrafficPolicy
	// target is the targeted MeshService, or nil when it does not exist.
	target *meshv1.MeshService
	// mirrors are the MeshServices that routes mirror to, by name; a
	// missing one maps to nil.
	mirrors map[string]*meshv1.MeshService
	// rivals are the TrafficPolicies of the namespace (this one included)
	// that target the same MeshService.
	rivals []meshv1.TrafficPolicy
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficpolicies,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficpolicies/status,verbs=patch

// Reconcile brings one TrafficPolicy's status up to date.
func (r *TrafficPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return reconcileStatus(ctx, r.Client, req, &meshv1.TrafficPolicy{}, r.readScope, r.writeStatus)
}

func (r *TrafficPolicyReconciler) readScope(ctx context.Context, tp *meshv1.TrafficPolicy) (*trafficPolicyScope, error) {
	s := &trafficPolicyScope{tp: tp, mirrors: map[string]*meshv1.MeshService{}}
	var err error
	if s.target, err = r.meshService(ctx, tp.Namespace, tp.Spec.TargetRef.Name); err != nil {
		return nil, err
	}
	for _, route := range tp.Spec.HTTP {
		if route.Mirror == nil {
			continue
		}
		if _, done := s.mirrors[route.Mirror.Name]; done {
			continue
		}
		if s.mirrors[route.Mirror.Name], err = r.meshService(ctx, tp.Namespace, route.Mirror.Name); err != nil {
			return nil, err
		}
	}
	rivals := &meshv1.TrafficPolicyList{}
	if err := r.Client.List(ctx, rivals, client.InNamespace(tp.Namespace),
		client.MatchingFields{indexPolicyTarget: tp.Spec.TargetRef.Name}); err != nil {
		return nil, fmt.Errorf("listing TrafficPolicies on MeshService %s/%s: %w", tp.Namespace, tp.Spec.TargetRef.Name, err)
	}
	s.rivals = rivals.Items
	return s, nil
}

// meshService reads a MeshService, returning nil when it does not exist.
func (r *TrafficPolicyReconciler) meshService(ctx context.Context, namespace, name string) (*meshv1.MeshService, error) {
	ms := &meshv1.MeshService{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, ms)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading MeshService %s/%s: %w", namespace, name, err)
	}
	return ms, nil
}

// SetupWithManager registers the reconciler and what it watches.
func (r *TrafficPolicyReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &meshv1.TrafficPolicy{}, indexPolicyTarget, func(o client.Object) []string {
		return []string{o.(*meshv1.TrafficPolicy).Spec.TargetRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing TrafficPolicies by %s: %w", indexPolicyTarget, err)
	}
	if err := idx.IndexField(ctx, &meshv1.TrafficPolicy{}, indexPolicyRefs, func(o client.Object) []string {
		return policyRefs(o.(*meshv1.TrafficPolicy))
	}); err != nil {
		return fmt.Errorf("indexing TrafficPolicies by the MeshServices they name: %w", err)
	}
	b := ctrl.NewControllerManagedBy(mgr).For(&meshv1.TrafficPolicy{})
	if r.Acks != nil {
		b = b.WatchesRawSource(source.Channel(r.Acks, &handler.EnqueueRequestForObject{}))
	}
	return b.
		Watches(&meshv1.TrafficPolicy{}, handler.EnqueueRequestsFromMapFunc(r.rivalsOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&meshv1.MeshService{}, handler.EnqueueRequestsFromMapFunc(r.naming),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Complete(r)
}

// policyRefs lists the MeshServices a policy names, each once.
func policyRefs(tp *meshv1.TrafficPolicy) []string {
	refs := []string{tp.Spec.TargetRef.Name}
	for _, route := range tp.Spec.HTTP {
		if route.Mirror != nil && route.Mirror.Name != tp.Spec.TargetRef.Name {
			refs = append(refs, route.Mirror.Name)
		}
	}
	return refs
}

func (r *TrafficPolicyReconciler) rivalsOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesBy(ctx, o.GetNamespace(), indexPolicyTarget, o.(*meshv1.TrafficPolicy).Spec.TargetRef.Name)
}

func (r *TrafficPolicyReconciler) naming(ctx context.Context, o client.Object) []reconcile.Request {
	return r.policiesBy(ctx, o.GetNamespace(), indexPolicyRefs, o.GetName())
}

func (r *TrafficPolicyReconciler) policiesBy(ctx context.Context, namespace, index, value string) []reconcile.Request {
	return requestsFor(ctx, r.Client, &meshv1.TrafficPolicyList{}, client.InNamespace(namespace), client.MatchingFields{index: value})
}
