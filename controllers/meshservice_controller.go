package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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

// Field indexes the reconcilers look objects up by.
const (
	// indexServiceName indexes MeshServices by spec.serviceName.
	indexServiceName = "spec.serviceName"
)

// MeshServiceReconciler keeps a MeshService's Accepted and ResolvedRefs
// conditions and its endpoint counts true to the world: its Service, the
// Service's EndpointSlices, and other MeshServices claiming the same
// Service.
type MeshServiceReconciler struct {
	Client client.Client
	// Status writes the conditions this reconciler owns.
	Status status.Writer
	// Readiness writes Ready and the proxy counts.
	Readiness status.Writer
	// Proxies, when set, says what the proxies acknowledged; Acks carries
	// the objects to look at again when that changes.
	Proxies ProxyView
	Acks    <-chan event.GenericEvent
}

// meshServiceScope is everything one reconcile reads, read once.
type meshServiceScope struct {
	ms *meshv1.MeshService
	// svc is the Service, or nil when it does not exist.
	svc *corev1.Service
	// slices are the Service's EndpointSlices.
	slices []discoveryv1.EndpointSlice
	// claimants are the MeshServices of the namespace (this one included)
	// that name the same Service.
	claimants []meshv1.MeshService
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshservices,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshservices/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=services,verbs=list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=list;watch

// Reconcile brings one MeshService's status up to date.
func (r *MeshServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	return reconcileStatus(ctx, r.Client, req, &meshv1.MeshService{}, r.readScope, r.writeStatus)
}

func (r *MeshServiceReconciler) readScope(ctx context.Context, ms *meshv1.MeshService) (*meshServiceScope, error) {
	s := &meshServiceScope{ms: ms}

	svc := &corev1.Service{}
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: ms.Namespace, Name: ms.Spec.ServiceName}, svc)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, fmt.Errorf("reading Service %s/%s: %w", ms.Namespace, ms.Spec.ServiceName, err)
	default:
		s.svc = svc
	}

	slices := &discoveryv1.EndpointSliceList{}
	if err := r.Client.List(ctx, slices, client.InNamespace(ms.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: ms.Spec.ServiceName}); err != nil {
		return nil, fmt.Errorf("listing EndpointSlices of Service %s/%s: %w", ms.Namespace, ms.Spec.ServiceName, err)
	}
	s.slices = slices.Items

	claimants := &meshv1.MeshServiceList{}
	if err := r.Client.List(ctx, claimants, client.InNamespace(ms.Namespace),
		client.MatchingFields{indexServiceName: ms.Spec.ServiceName}); err != nil {
		return nil, fmt.Errorf("listing MeshServices for Service %s/%s: %w", ms.Namespace, ms.Spec.ServiceName, err)
	}
	s.claimants = claimants.Items
	return s, nil
}

// SetupWithManager registers the reconciler and what it watches.
func (r *MeshServiceReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &meshv1.MeshService{}, indexServiceName,
		func(o client.Object) []string { return []string{o.(*meshv1.MeshService).Spec.ServiceName} }); err != nil {
		return fmt.Errorf("indexing MeshServices by %s: %w", indexServiceName, err)
	}
	b := ctrl.NewControllerManagedBy(mgr).For(&meshv1.MeshService{})
	if r.Acks != nil {
		b = b.WatchesRawSource(source.Channel(r.Acks, &handler.EnqueueRequestForObject{}))
	}
	return b.
		// A MeshService's spec change can start or end a conflict with the
		// others claiming the same Service.
		Watches(&meshv1.MeshService{}, handler.EnqueueRequestsFromMapFunc(r.claimantsOf),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.forService)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.forEndpointSlice)).
		Complete(r)
}

func (r *MeshServiceReconciler) claimantsOf(ctx context.Context, o client.Object) []reconcile.Request {
	return r.byServiceName(ctx, o.GetNamespace(), o.(*meshv1.MeshService).Spec.ServiceName)
}

func (r *MeshServiceReconciler) forService(ctx context.Context, o client.Object) []reconcile.Request {
	return r.byServiceName(ctx, o.GetNamespace(), o.GetName())
}

func (r *MeshServiceReconciler) forEndpointSlice(ctx context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[discoveryv1.LabelServiceName]
	if name == "" {
		return nil
	}
	return r.byServiceName(ctx, o.GetNamespace(), name)
}

func (r *MeshServiceReconciler) byServiceName(ctx context.Context, namespace, name string) []reconcile.Request {
	return requestsFor(ctx, r.Client, &meshv1.MeshServiceList{}, client.InNamespace(namespace), client.MatchingFields{indexServiceName: name})
}
