package controllers

import (
	"context"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/status"
)

// MeshServiceReconciler writes a MeshService's status: the mesh model's
// verdict on it (Accepted, ResolvedRefs, Stalled, the endpoint counts) and
// Ready from what the proxies acknowledged.
type MeshServiceReconciler struct {
	Client client.Client
	// Status writes the conditions the verdict decides.
	Status status.Writer
	// Readiness writes Ready and the proxy counts.
	Readiness status.Writer
	Verdicts  VerdictSource
	// Proxies, when set, says what the proxies acknowledged.
	Proxies ProxyView
	// Again carries the objects to look at again (a verdict or an
	// acknowledgement changed).
	Again <-chan event.GenericEvent
	// Events, when set, records Ready turning to Rejected as a Warning
	// Event on the object.
	Events events.EventRecorder
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshservices,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=meshservices/status,verbs=patch

// Reconcile brings one MeshService's status up to date.
func (r *MeshServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ms := &meshv1.MeshService{}
	v, ok, err := currentVerdict(ctx, r.Client, r.Verdicts, req, mesh.KindMeshService, ms)
	if !ok || err != nil {
		return ctrl.Result{}, err
	}
	conds := conditionsOf(v)
	if err := applyVerdict(ctx, r.Status, ms, ms.Status.Conditions, conds,
		map[string]any{"observedGeneration": ms.Status.ObservedGeneration, "endpoints": ms.Status.Endpoints},
		map[string]any{"observedGeneration": ms.Generation, "endpoints": v.Endpoints}); err != nil {
		return ctrl.Result{}, err
	}
	p := countProxies(r.Proxies, mesh.KindMeshService, ms)
	return ctrl.Result{}, applyReady(ctx, r.Readiness, r.Events, ms, ms.Status.Conditions, readyCondition(ms.Generation, conds, p),
		map[string]any{"proxies": ProxyCountsField(ms.Status.Proxies)},
		map[string]any{"proxies": ProxyCountsField(meshv1.ProxyCounts{Total: int32(p.total), Synced: int32(p.synced)})})
}

// ProxyCountsField is status.proxies as the readiness writer applies it:
// both counts always, zeros included. ProxyCounts leaves zeros out, and
// a server-side apply of an empty proxies object, after one with counts,
// makes the API server store null there and refuse the whole status: the
// counts of a MeshService whose last proxy left could never be written.
func ProxyCountsField(c meshv1.ProxyCounts) map[string]any {
	return map[string]any{"total": c.Total, "synced": c.Synced}
}

// SetupWithManager registers the reconciler and what it watches.
func (r *MeshServiceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&meshv1.MeshService{}).
		WatchesRawSource(source.Channel(r.Again, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
