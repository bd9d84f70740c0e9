package controllers

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// PeerAuthenticationReconciler writes a PeerAuthentication's status: the
// mesh model's verdict on it (with its scope and the pods it covers) and
// Ready from the proxies whose configuration its mode shapes.
type PeerAuthenticationReconciler struct {
	Client            client.Client
	Status, Readiness status.Writer
	Verdicts          VerdictSource
	Proxies           ProxyView
	Again             <-chan event.GenericEvent
	// Events, when set, records Ready turning to Rejected as a Warning
	// Event on the object.
	Events events.EventRecorder
}

// +kubebuilder:rbac:groups=mesh.weft.dev,resources=peerauthentications,verbs=list;watch
// +kubebuilder:rbac:groups=mesh.weft.dev,resources=peerauthentications/status,verbs=patch

// Reconcile brings one PeerAuthentication's status up to date.
func (r *PeerAuthenticationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pa := &meshv1.PeerAuthentication{}
	v, ok, err := currentVerdict(ctx, r.Client, r.Verdicts, req, mesh.KindPeerAuthentication, pa)
	if !ok || err != nil {
		return ctrl.Result{}, err
	}
	conds := conditionsOf(v)
	if err := applyVerdict(ctx, r.Status, pa, pa.Status.Conditions, conds,
		map[string]any{"observedGeneration": pa.Status.ObservedGeneration, "scope": pa.Status.Scope, "workloads": pa.Status.Workloads},
		map[string]any{"observedGeneration": pa.Generation, "scope": v.Scope, "workloads": v.Workloads}); err != nil {
		return ctrl.Result{}, err
	}
	ready := readyCondition(pa.Generation, conds, countProxies(r.Proxies, mesh.KindPeerAuthentication, pa))
	if n := takingPlainText(r.Proxies, pa); n > 0 && ready.Status == metav1.ConditionTrue {
		ready = falseCondition(meshv1.ConditionReady, meshv1.ReasonPlainText, fmt.Sprintf(
			"%s plain text on ports that this policy makes STRICT: proxyless gRPC servers have no certificate unless workloads get pod certificates (--cert-delivery=podCertificate, or auto where the API server serves them); until then any caller reaches them without mTLS",
			plural(n, "1 workload takes", "%d workloads take")), pa.Generation)
	}
	return ctrl.Result{}, applyReady(ctx, r.Readiness, r.Events, pa, pa.Status.Conditions, ready, nil, nil)
}

// PlainTextView counts the proxies that serve in plain text ports a
// PeerAuthentication sets STRICT; the xDS server implements it.
type PlainTextView interface {
	TakingPlainText(kind, namespace, name string) int
}

func takingPlainText(v ProxyView, pa *meshv1.PeerAuthentication) int {
	if pv, ok := v.(PlainTextView); ok {
		return pv.TakingPlainText(mesh.KindPeerAuthentication, pa.Namespace, pa.Name)
	}
	return 0
}

// SetupWithManager registers the reconciler and what it watches.
func (r *PeerAuthenticationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&meshv1.PeerAuthentication{}).
		WatchesRawSource(source.Channel(r.Again, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
