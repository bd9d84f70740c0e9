package controllers

import (
	"context"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/status"
)

// TrafficPolicyReconciler writes a TrafficPolicy's status: the mesh
// model's verdict on it and Ready from what the proxies acknowledged.
type TrafficPolicyReconciler struct {
	Client            client.Client
	Status, Readiness status.Writer
	Verdicts          VerdictSource
	Proxies           ProxyView
	Again             <-chan event.GenericEvent
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficpolicies,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=trafficpolicies/status,verbs=patch

// Reconcile brings one TrafficPolicy's status up to date.
func (r *TrafficPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tp := &meshv1.TrafficPolicy{}
	v, ok, err := currentVerdict(ctx, r.Client, r.Verdicts, req, mesh.KindTrafficPolicy, tp)
	if !ok || err != nil {
		return ctrl.Result{}, err
	}
	conds := conditionsOf(v)
	if err := applyVerdict(ctx, r.Status, tp, tp.Status.Conditions, conds,
		map[string]any{"observedGeneration": tp.Status.ObservedGeneration},
		map[string]any{"observedGeneration": tp.Generation}); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, applyReady(ctx, r.Readiness, tp, tp.Status.Conditions,
		readyCondition(tp.Generation, conds, countProxies(r.Proxies, mesh.KindTrafficPolicy, tp)), nil, nil)
}

// SetupWithManager registers the reconciler and what it watches.
func (r *TrafficPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&meshv1.TrafficPolicy{}).
		WatchesRawSource(source.Channel(r.Again, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
