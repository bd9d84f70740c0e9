package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func TestWithStalledCopiesTheFirstFailure(t *testing.T) {
	ok := trueCondition(meshv1.ConditionAccepted, meshv1.ReasonAccepted, "fine", 2)
	bad := falseCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonPortNotFound, "spec.ports[0].port: nope", 2)
	got := withStalled(ok, bad)
	if len(got) != 3 || got[2].Type != meshv1.ConditionStalled || got[2].Reason != meshv1.ReasonPortNotFound ||
		got[2].Message != bad.Message || got[2].ObservedGeneration != 2 || got[2].Status != metav1.ConditionTrue {
		t.Errorf("withStalled = %+v", got)
	}
	if got := withStalled(ok); len(got) != 1 {
		t.Errorf("Stalled added with nothing failing: %+v", got)
	}
}

func TestReadyCondition(t *testing.T) {
	ok := []metav1.Condition{trueCondition(meshv1.ConditionAccepted, meshv1.ReasonAccepted, "", 3), trueCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonResolvedRefs, "", 3)}
	bad := []metav1.Condition{ok[0], falseCondition(meshv1.ConditionResolvedRefs, meshv1.ReasonSubsetNotFound, "spec.x: no", 3)}
	for _, tc := range []struct {
		name    string
		decided []metav1.Condition
		p       proxyCounts
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{"unresolved", bad, proxyCounts{total: 2, synced: 2}, metav1.ConditionFalse, meshv1.ReasonSubsetNotFound, "Not sent to proxies: spec.x: no"},
		{"rejected", ok, proxyCounts{total: 2, synced: 1, rejected: "proxy a rejected it"}, metav1.ConditionFalse, meshv1.ReasonRejected, "proxy a rejected it"},
		{"no proxies", ok, proxyCounts{}, metav1.ConditionTrue, meshv1.ReasonSynced, "No connected proxy"},
		{"progressing", ok, proxyCounts{total: 3, synced: 1}, metav1.ConditionFalse, meshv1.ReasonProgressing, "1 of 3 proxies have acknowledged generation 3"},
		{"synced", ok, proxyCounts{total: 3, synced: 3}, metav1.ConditionTrue, meshv1.ReasonSynced, "All 3 proxies have acknowledged generation 3"},
	} {
		c := readyCondition(3, tc.decided, tc.p)
		if c.Status != tc.status || c.Reason != tc.reason || !strings.Contains(c.Message, tc.message) || c.ObservedGeneration != 3 {
			t.Errorf("%s: got %s/%s %q", tc.name, c.Status, c.Reason, c.Message)
		}
	}
}
