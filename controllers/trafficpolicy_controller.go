package controllers

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
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
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// TrafficPolicyReconciler writes a TrafficPolicy's status: the mesh
// model's verdict on it and Ready from what the proxies acknowledged.
type TrafficPolicyReconciler struct {
	Client            client.Client
	Status, Readiness status.Writer
	Verdicts          VerdictSource
	Proxies           ProxyView
	Again             <-chan event.GenericEvent
	// Events, when set, records Ready turning to Rejected as a Warning
	// Event on the object.
	Events events.EventRecorder
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
	ready := readyCondition(tp.Generation, conds, countProxies(r.Proxies, mesh.KindTrafficPolicy, tp))
	var was metav1.Condition
	if c := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady); c != nil {
		was = *c
	}
	_, err = r.Readiness.Apply(ctx, tp, tp.Status.Conditions, nil, status.Update{
		OwnedTypes: []string{meshv1.ConditionReady, meshv1.ConditionHonoured},
		Conditions: []metav1.Condition{ready, honouredCondition(tp, r.Proxies)},
	})
	if err == nil {
		announceRejected(r.Events, tp, was, ready)
	}
	return ctrl.Result{}, err
}

// FlavourView counts, by proxy flavour, the connected proxies whose
// configuration a resource shapes (the acknowledgement tracker).
type FlavourView interface {
	Flavours(kind, namespace, name string) map[string]int
}

// honouredCondition names the fields of a policy that connected proxies
// of some flavour ignore (translate.Unhonoured), with how many of them.
func honouredCondition(tp *meshv1.TrafficPolicy, proxies ProxyView) metav1.Condition {
	var counts map[string]int
	if fv, ok := proxies.(FlavourView); ok {
		counts = fv.Flavours(mesh.KindTrafficPolicy, tp.Namespace, tp.Name)
	}
	var gaps []string
	for _, f := range []wire.Flavour{wire.FlavourEnvoy, wire.FlavourGRPC} {
		n := counts[string(f)]
		if n == 0 {
			continue
		}
		if fields := translate.Unhonoured(&tp.Spec, f); len(fields) > 0 {
			gaps = append(gaps, fmt.Sprintf("%s (%s) ignore%s %s", plural(n, "1 "+flavourName(f)+" proxy", fmt.Sprintf("%%d %s proxies", flavourName(f))),
				f, plural(n, "s", ""), strings.Join(fields, ", ")))
		}
	}
	if len(gaps) == 0 {
		return trueCondition(meshv1.ConditionHonoured, meshv1.ReasonHonoured,
			"Every connected proxy the policy shapes acts on every field it sets", tp.Generation)
	}
	return falseCondition(meshv1.ConditionHonoured, meshv1.ReasonPartiallyHonoured,
		strings.Join(gaps, "; ")+"; they apply the rest (docs/traffic.md)", tp.Generation)
}

func flavourName(f wire.Flavour) string {
	if f == wire.FlavourGRPC {
		return "proxyless gRPC"
	}
	return "Envoy sidecar"
}

// SetupWithManager registers the reconciler and what it watches.
func (r *TrafficPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).For(&meshv1.TrafficPolicy{}).
		WatchesRawSource(source.Channel(r.Again, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
