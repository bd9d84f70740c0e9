package replicas

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/wire"
)

func TestClearListRoundTrip(t *testing.T) {
	uids := []types.UID{"0b1c", "5d2e", "a9f0"}
	v, left := encodeClear(uids)
	if v != "0b1c,5d2e,a9f0" || left != 0 {
		t.Fatalf("encodeClear = %q, %d", v, left)
	}
	got := decodeClear(v)
	for _, u := range uids {
		if !got[u] {
			t.Errorf("%s lost in %q", u, v)
		}
	}
	if len(decodeClear("")) != 0 || len(decodeClear(" , ,")) != 0 {
		t.Error("an empty list decodes to UIDs")
	}
	var many []types.UID
	for i := range maxListed + 3 {
		many = append(many, types.UID(fmt.Sprintf("%036d", i)))
	}
	v, left = encodeClear(many)
	if left != 3 || strings.Count(v, ",") != maxListed-1 {
		t.Errorf("%d UIDs: %d listed, %d left", len(many), strings.Count(v, ",")+1, left)
	}
	// What the API server takes in annotations (256 KiB), with room for
	// the rest of the object's.
	if len(v) > 200<<10 {
		t.Errorf("a full list is %d bytes", len(v))
	}
}

func lease(holder string, renewed time.Time, clearList string) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: wire.DrainLeasePrefix + "r",
		Annotations: map[string]string{wire.AnnotationDrainClear: clearList}},
		Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](10), RenewTime: &metav1.MicroTime{Time: renewed}}}
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	}
	return l
}

// TestPeerLiveness: a peer's heartbeat is timed by this replica's clock
// when it sees a renewal; it is gone once unrenewed for its duration
// while this replica's own renewals kept coming, or once it gave its
// Lease up, and never for a watch that stopped bringing anything.
func TestPeerLiveness(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	// The peer's clock is an hour off: it does not matter.
	renewed := t0.Add(-time.Hour)
	p := peerOf(lease("b", renewed, "u1"), nil, t0)
	if !p.holding || p.name != "b" || p.duration != 10*time.Second || !p.clear["u1"] || !p.seenAt.Equal(t0) {
		t.Fatalf("peerOf: %+v", p)
	}
	// Seen again, not renewed: the heartbeat keeps its age.
	if q := peerOf(lease("b", renewed, "u1,u2"), p, t0.Add(5*time.Second)); !q.seenAt.Equal(t0) || !q.clear["u2"] {
		t.Errorf("an unrenewed Lease seen again: %+v", q)
	}
	// Renewed: the heartbeat is now.
	if q := peerOf(lease("b", renewed.Add(2*time.Second), "u1"), p, t0.Add(2*time.Second)); !q.seenAt.Equal(t0.Add(2 * time.Second)) {
		t.Errorf("a renewed Lease: %+v", q)
	}
	for _, c := range []struct {
		name    string
		ownSeen time.Time
		gone    bool
	}{
		{"this replica's own heartbeat not seen yet", time.Time{}, false},
		{"within the duration", t0.Add(9 * time.Second), false},
		{"at the very end of the duration", t0.Add(10 * time.Second), false},
		{"own renewal seen after the duration", t0.Add(10*time.Second + time.Millisecond), true},
	} {
		if got := p.gone(c.ownSeen); got != c.gone {
			t.Errorf("%s: gone = %v", c.name, got)
		}
	}
	released := peerOf(lease("", renewed, ""), p, t0.Add(time.Second))
	if !released.gone(time.Time{}) || released.name != "r" {
		t.Errorf("a Lease given up: %+v, gone %v", released, released.gone(time.Time{}))
	}
}

func TestWordOf(t *testing.T) {
	t0 := time.Now()
	peers := map[string]*peer{
		"weft-drain.c": {name: "c", holding: true, seenAt: t0, duration: 10 * time.Second, clear: map[types.UID]bool{"u1": true}},
		"weft-drain.b": {name: "b", holding: true, seenAt: t0, duration: 10 * time.Second, clear: map[types.UID]bool{}},
		"weft-drain.d": {name: "d", holding: true, seenAt: t0.Add(-time.Minute), duration: 10 * time.Second, clear: map[types.UID]bool{}},
		"weft-drain.e": {name: "e", holding: false, seenAt: t0, duration: 10 * time.Second},
	}
	w := wordOf(peers, "u1", t0.Add(time.Second))
	if !w.Synced || !slices.Equal(w.Counted, []string{"b", "c"}) || !slices.Equal(w.Reaching, []string{"b"}) || !slices.Equal(w.Gone, []string{"d", "e"}) {
		t.Errorf("wordOf: %+v", w)
	}
	if w := wordOf(map[string]*peer{}, "u1", t0); !w.Synced || len(w.Counted)+len(w.Reaching)+len(w.Gone) != 0 {
		t.Errorf("no peer: %+v", w)
	}
}

func TestNameOf(t *testing.T) {
	for _, c := range []struct{ pod, host, want string }{
		{"weft-controller-7d9f-abcde", "anything", "weft-controller-7d9f-abcde"},
		{"", "Build_Host.example", "build-host.example-x1y2z"},
		{"", "__", "replica-x1y2z"},
	} {
		if got := NameOf(c.pod, c.host, "x1y2z"); got != c.want {
			t.Errorf("NameOf(%q, %q) = %q, want %q", c.pod, c.host, got, c.want)
		}
	}
	if OwnerOf("p", "") != nil || OwnerOf("", "u") != nil {
		t.Error("an owner without a pod's name and UID")
	}
	if o := OwnerOf("p", "u"); o.Kind != "Pod" || o.Name != "p" || o.UID != "u" || o.APIVersion != "v1" {
		t.Errorf("OwnerOf: %+v", o)
	}
}
