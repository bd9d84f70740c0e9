package status

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cond(t, s, reason string, at time.Time) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(s), Reason: reason, Message: reason, LastTransitionTime: metav1.NewTime(at)}
}

func TestMergeKeepsTransitionTimeUnlessStatusChanges(t *testing.T) {
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := metav1.NewTime(old.Add(time.Hour))
	current := []metav1.Condition{cond("Accepted", "True", "Accepted", old), cond("ResolvedRefs", "True", "ResolvedRefs", old)}
	desired := []metav1.Condition{
		cond("Accepted", "True", "Accepted", time.Time{}),             // same status: keeps old time
		cond("ResolvedRefs", "False", "ServiceNotFound", time.Time{}), // flipped: now
		cond("Stalled", "True", "ServiceNotFound", time.Time{}),       // new: now
	}
	got := Merge(current, desired, now)
	want := map[string]time.Time{"Accepted": old, "ResolvedRefs": now.Time, "Stalled": now.Time}
	for _, c := range got {
		if !c.LastTransitionTime.Time.Equal(want[c.Type]) {
			t.Errorf("%s: lastTransitionTime %s, want %s", c.Type, c.LastTransitionTime, want[c.Type])
		}
	}
}

func TestChangedIgnoresTimeAndUnownedTypes(t *testing.T) {
	a := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	current := []metav1.Condition{cond("Accepted", "True", "Accepted", a), cond("Ready", "Unknown", "Pending", a)}
	same := []metav1.Condition{cond("Accepted", "True", "Accepted", a.Add(time.Hour))}
	if changed(current, same, []string{"Accepted"}) {
		t.Error("a different lastTransitionTime alone counts as a change")
	}
	if changed(current, same, []string{"Accepted", "Stalled"}) {
		t.Error("an owned type absent on both sides counts as a change")
	}
	if !changed(current, same, []string{"Accepted", "Ready"}) {
		t.Error("an owned condition to be removed does not count as a change")
	}
	msg := []metav1.Condition{cond("Accepted", "True", "Accepted", a)}
	msg[0].Message = "other"
	if !changed(current, msg, []string{"Accepted"}) {
		t.Error("a new message does not count as a change")
	}
	gen := []metav1.Condition{cond("Accepted", "True", "Accepted", a)}
	gen[0].ObservedGeneration = 2
	if !changed(current, gen, []string{"Accepted"}) {
		t.Error("a new observedGeneration does not count as a change")
	}
}

type counts struct {
	Ready int32 `json:"ready,omitempty"`
}

func TestNormalizeComparesTypedAndReadBackValues(t *testing.T) {
	typed := map[string]any{"observedGeneration": int64(3), "endpoints": counts{Ready: 2}, "scope": namedString("Mesh")}
	readBack := map[string]any{"observedGeneration": int64(3), "endpoints": &counts{Ready: 2}, "scope": "Mesh"}
	a, b := normalize(typed), normalize(readBack)
	if len(a) != 3 || a["endpoints"].(map[string]any)["ready"] != b["endpoints"].(map[string]any)["ready"] ||
		a["observedGeneration"] != b["observedGeneration"] || a["scope"] != b["scope"] {
		t.Errorf("normalized values differ: %v vs %v", a, b)
	}
}

type namedString string
