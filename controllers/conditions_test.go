package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func TestOldestFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(name string, at time.Time) meshv1.MeshService {
		return meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(at)}}
	}
	got := oldestFirst([]meshv1.MeshService{ms("c", t0.Add(time.Second)), ms("b", t0), ms("a", t0.Add(time.Second)), ms("z", t0)})
	var names []string
	for _, o := range got {
		names = append(names, o.Name)
	}
	if want := "b z a c"; join(names) != want {
		t.Errorf("order %q, want %q", join(names), want)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

func TestCountEndpoints(t *testing.T) {
	ep := func(addr string, uid string, ready *bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
		if uid != "" {
			e.TargetRef = &corev1.ObjectReference{UID: types.UID(uid)}
		}
		return e
	}
	slices := []discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep("10.0.0.1", "a", ptr.To(true)), ep("10.0.0.2", "b", nil), ep("10.0.0.3", "c", ptr.To(false))}},
		{Endpoints: []discoveryv1.Endpoint{ep("fd00::1", "a", ptr.To(true)), ep("10.0.0.9", "", ptr.To(true)), ep("10.0.0.9", "", ptr.To(true))}},
		{Endpoints: []discoveryv1.Endpoint{{}}},
	}
	got := countEndpoints(slices)
	// a (twice, one pod), b (no condition: ready), c (not ready), 10.0.0.9
	// (no pod, counted once by address); the empty endpoint is skipped.
	if got.Ready != 3 || got.Total != 4 {
		t.Errorf("got %+v, want ready 3 total 4", got)
	}
}

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
