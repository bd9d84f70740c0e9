package controllers

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

// reconcilerConditions are the condition types every kind's reconciler
// writes from the model's verdict. Ready belongs to another writer.
var reconcilerConditions = []string{
	meshv1.ConditionAccepted, meshv1.ConditionResolvedRefs, meshv1.ConditionStalled, meshv1.ConditionRulesEnforced,
}

func trueCondition(t, reason, msg string, gen int64) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: gen}
}

func falseCondition(t, reason, msg string, gen int64) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// withStalled adds Stalled=True, with the reason and message of the first
// failing condition, when Accepted or ResolvedRefs is False: nothing moves
// until somebody changes a resource, and kstatus (Flux) and Argo CD read it
// as failed. When nothing fails, Stalled is left out, which removes it.
func withStalled(conds ...metav1.Condition) []metav1.Condition {
	for _, c := range conds {
		if c.Status == metav1.ConditionFalse {
			return append(conds, metav1.Condition{
				Type: meshv1.ConditionStalled, Status: metav1.ConditionTrue,
				Reason: c.Reason, Message: c.Message, ObservedGeneration: c.ObservedGeneration,
			})
		}
	}
	return conds
}

// ProxyView tells the readiness writer what the proxies acknowledged; the
// xDS server implements it.
type ProxyView interface {
	// ProxiesFor counts the connected proxies whose configuration a
	// resource shapes, and those that acknowledged its given generation.
	ProxiesFor(kind, namespace, name string, generation int64) (total, synced int, rejected string)
	// Changes signals when the answers may have changed.
	Changes() <-chan struct{}
}

// proxyCounts is a ProxyView's answer for one resource.
type proxyCounts struct {
	total, synced int
	rejected      string
}

func countProxies(v ProxyView, kind string, obj client.Object) proxyCounts {
	if v == nil {
		return proxyCounts{}
	}
	total, synced, rejected := v.ProxiesFor(kind, obj.GetNamespace(), obj.GetName(), obj.GetGeneration())
	return proxyCounts{total: total, synced: synced, rejected: rejected}
}

// readyCondition says whether every proxy that the resource affects runs
// its current generation: False with the failing condition's reason while
// Accepted or ResolvedRefs is False; False with reason Rejected when a
// proxy refused its configuration; False with reason Progressing while
// some proxies have not acknowledged it yet; True otherwise (also when no
// connected proxy is affected).
func readyCondition(gen int64, decided []metav1.Condition, p proxyCounts) metav1.Condition {
	for _, c := range decided {
		if c.Status == metav1.ConditionFalse && (c.Type == meshv1.ConditionAccepted || c.Type == meshv1.ConditionResolvedRefs) {
			msg := "Not sent to proxies: " + c.Message
			if p.total > 0 {
				// The mesh model keeps the last good generation in force.
				msg += fmt.Sprintf(". %s keep%s the last generation that was in force", plural(p.total, "The affected proxy", "The %d affected proxies"), plural(p.total, "s", ""))
			}
			return falseCondition(meshv1.ConditionReady, c.Reason, msg, gen)
		}
	}
	switch {
	case p.rejected != "":
		return falseCondition(meshv1.ConditionReady, meshv1.ReasonRejected, p.rejected, gen)
	case p.total == 0:
		return trueCondition(meshv1.ConditionReady, meshv1.ReasonSynced,
			"No connected proxy is affected by this resource, so none is waiting for it", gen)
	case p.synced < p.total:
		return falseCondition(meshv1.ConditionReady, meshv1.ReasonProgressing,
			fmt.Sprintf("%d of %d proxies have acknowledged generation %d", p.synced, p.total, gen), gen)
	}
	return trueCondition(meshv1.ConditionReady, meshv1.ReasonSynced,
		fmt.Sprintf("All %d proxies have acknowledged generation %d", p.total, gen), gen)
}

// plural picks one or many ("%d" in many is the count).
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	if strings.Contains(many, "%d") {
		return fmt.Sprintf(many, n)
	}
	return many
}

// applyVerdict writes the conditions a verdict decides (and the kind's
// other status fields it owns) under the kind's field manager.
func applyVerdict(ctx context.Context, w status.Writer, obj client.Object, current, conds []metav1.Condition,
	currentFields, fields map[string]any) error {
	_, err := w.Apply(ctx, obj, current, currentFields, status.Update{
		OwnedTypes: reconcilerConditions,
		Conditions: conds,
		Fields:     fields,
	})
	return err
}

// applyReady writes Ready (and, when fields is set, the proxy counts)
// under the readiness writer's field manager.
func applyReady(ctx context.Context, w status.Writer, rec events.EventRecorder, obj client.Object, current []metav1.Condition,
	ready metav1.Condition, currentFields, fields map[string]any) error {
	before := meta.FindStatusCondition(current, meshv1.ConditionReady)
	var was metav1.Condition
	if before != nil {
		was = *before
	}
	_, err := w.Apply(ctx, obj, current, currentFields, status.Update{
		OwnedTypes: []string{meshv1.ConditionReady},
		Conditions: []metav1.Condition{ready},
		Fields:     fields,
	})
	if err == nil {
		announceRejected(rec, obj, was, ready)
	}
	return err
}

// announceRejected records a Warning Event on an object when its Ready
// turns to Rejected, or names another rejection: a proxy refused the
// configuration made from it. The transition shows in kubectl describe
// and in tools that follow Events; a Ready that stays the same records
// nothing.
func announceRejected(rec events.EventRecorder, obj client.Object, was, ready metav1.Condition) {
	if rec == nil || ready.Reason != meshv1.ReasonRejected || (was.Reason == ready.Reason && was.Message == ready.Message) {
		return
	}
	rec.Eventf(obj, nil, corev1.EventTypeWarning, meshv1.ReasonRejected, "Configure", "%s", ready.Message)
}
