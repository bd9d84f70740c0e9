package controllers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/status"
)

// reconcilerConditions are the condition types every kind's reconciler
// owns. Ready belongs to another writer.
var reconcilerConditions = []string{
	meshv1.ConditionAccepted, meshv1.ConditionResolvedRefs, meshv1.ConditionStalled,
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

// applyReady writes Ready under the readiness writer's field manager.
// Ready is False, with the same reason, while Accepted or ResolvedRefs is
// False: nothing is sent to proxies. Otherwise it is True once every
// affected proxy has acknowledged the current generation. This build has no
// xDS server yet, so no proxy is ever connected and affected: Ready says so.
// The xDS acknowledgement tracker takes this writer's place and counts.
func applyReady(ctx context.Context, w status.Writer, obj client.Object, current, decided []metav1.Condition) error {
	gen := obj.GetGeneration()
	ready := trueCondition(meshv1.ConditionReady, meshv1.ReasonSynced,
		"No connected proxy is affected by this resource, so none is waiting for it", gen)
	for _, c := range decided {
		if c.Status == metav1.ConditionFalse && (c.Type == meshv1.ConditionAccepted || c.Type == meshv1.ConditionResolvedRefs) {
			ready = falseCondition(meshv1.ConditionReady, c.Reason, "Not sent to proxies: "+c.Message, gen)
			break
		}
	}
	_, err := w.Apply(ctx, obj, current, nil, status.Update{
		OwnedTypes: []string{meshv1.ConditionReady},
		Conditions: []metav1.Condition{ready},
	})
	return err
}

// oldestFirst orders objects by creation time, then name: the order in
// which competing claims are honoured.
func oldestFirst[T any, P interface {
	*T
	client.Object
}](items []T) []P {
	out := make([]P, 0, len(items))
	for i := range items {
		out = append(out, P(&items[i]))
	}
	slices.SortStableFunc(out, func(a, b P) int {
		ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
		if !ta.Equal(&tb) {
			if ta.Before(&tb) {
				return -1
			}
			return 1
		}
		return strings.Compare(a.GetName(), b.GetName())
	})
	return out
}

// checkRegex returns an error naming field when value does not compile as
// an RE2 regular expression (the dialect Envoy and grpc-go use).
func checkRegex(field, value string) error {
	if _, err := regexp.Compile(value); err != nil {
		return fmt.Errorf("%s: invalid regular expression: %w", field, err)
	}
	return nil
}

// checkPathMatch checks a path match that admission could not fully check.
func checkPathMatch(field string, p *meshv1.PathMatch) error {
	if p == nil || p.Type != meshv1.MatchRegularExpression {
		return nil
	}
	return checkRegex(field+".value", p.Value)
}

// checkHeaderMatch checks a header match that admission could not fully
// check.
func checkHeaderMatch(field string, h meshv1.HeaderMatch) error {
	if h.Type != meshv1.HeaderMatchRegularExpression || h.Value == nil {
		return nil
	}
	return checkRegex(field+".value", *h.Value)
}
