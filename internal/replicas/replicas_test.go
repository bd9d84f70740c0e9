package replicas

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

const ns = "weft-system"

// The boards of these tests renew every renew and hold for duration.
const (
	duration = 2 * time.Second
	renew    = 300 * time.Millisecond
)

// startBoard runs a board named name through cfg until the returned stop
// is called (which gives its Lease up) or the test ends.
func startBoard(t *testing.T, cfg *rest.Config, name string, log logr.Logger) (*Board, func()) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &Board{Client: cs, Namespace: ns, Name: name, Duration: duration, Renew: renew, MinInterval: 50 * time.Millisecond,
		Log: log.WithName(name)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("board %s: %v", name, err)
		}
	}
	t.Cleanup(stop)
	return b, stop
}

// await waits, waking on b's changes, until check passes.
func await(ctx context.Context, t *testing.T, b *Board, what string, check func(Word) error) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for {
		changed := b.Changed()
		if last = check(b.Word("pod-1")); last == nil {
			return time.Since(start)
		}
		select {
		case <-changed:
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, last)
		}
	}
}

// TestBoardsThroughTheAPIServer: two replicas' boards on a real API
// server. Each hears what the other says of a pod; a replica that stops
// gives its Lease up and is not waited for at once; a replica that dies
// (a Lease no longer renewed) is not waited for once its Lease expires,
// and not before; a replica cut off from the API server keeps counting
// the others, whose renewals it can no longer see.
func TestBoardsThroughTheAPIServer(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// Replica a reaches the API server through a path the test can cut.
	host, _, err := rest.DefaultServerUrlFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	path := testenv.Forward(t, host.Host)
	acfg := rest.CopyConfig(env.Config)
	acfg.Host = "https://" + path.Addr
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	a, _ := startBoard(t, acfg, "a", log)
	b, stopB := startBoard(t, env.Config, "b", log)

	await(ctx, t, a, "a counts b, which has said nothing", func(w Word) error {
		if !w.Synced || !slices.Equal(w.Counted, []string{"b"}) || !slices.Equal(w.Reaching, []string{"b"}) {
			return fmt.Errorf("%+v", w)
		}
		return nil
	})
	b.Publish([]types.UID{"pod-1", "pod-0"})
	took := await(ctx, t, a, "b says it is clear of pod-1", func(w Word) error {
		if !slices.Equal(w.Counted, []string{"b"}) || len(w.Reaching) != 0 {
			return fmt.Errorf("%+v", w)
		}
		return nil
	})
	t.Logf("b's word reached a in %v", took.Round(time.Millisecond))
	if w := a.Word("pod-2"); !slices.Equal(w.Reaching, []string{"b"}) {
		t.Errorf("of a pod b has not named: %+v", w)
	}
	var l coordinationv1.Lease
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: wire.DrainLeasePrefix + "b"}, &l); err != nil {
		t.Fatal(err)
	}
	if l.Labels[wire.LabelDrainReplica] != "true" || ptr.Deref(l.Spec.HolderIdentity, "") != "b" ||
		ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 2 || l.Annotations[wire.AnnotationDrainClear] != "pod-0,pod-1" {
		t.Errorf("b's Lease: %+v", l)
	}
	// A word taken back (a proxy came that is not clear of the pod).
	b.Publish([]types.UID{"pod-0"})
	await(ctx, t, a, "b takes its word back", func(w Word) error {
		if !slices.Equal(w.Reaching, []string{"b"}) {
			return fmt.Errorf("%+v", w)
		}
		return nil
	})

	t.Run("a replica that dies is not waited for once its Lease expires", func(t *testing.T) {
		// What a killed replica leaves: a Lease renewed once.
		now := metav1.NewMicroTime(time.Now())
		dead := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: wire.DrainLeasePrefix + "dead",
			Labels: map[string]string{wire.LabelDrainReplica: "true"}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("dead"), LeaseDurationSeconds: ptr.To[int32](2), RenewTime: &now}}
		if err := env.Client.Create(ctx, dead); err != nil {
			t.Fatal(err)
		}
		seen := await(ctx, t, a, "a counts the dead replica at first", func(w Word) error {
			if !slices.Contains(w.Reaching, "dead") {
				return fmt.Errorf("%+v", w)
			}
			return nil
		})
		counted := time.Now()
		await(ctx, t, a, "the dead replica is gone", func(w Word) error {
			if slices.Contains(w.Counted, "dead") || !slices.Contains(w.Gone, "dead") {
				return fmt.Errorf("%+v", w)
			}
			return nil
		})
		waited := time.Since(counted)
		t.Logf("the dead replica was counted for %v after a first saw its Lease (%v after it was made)",
			waited.Round(time.Millisecond), (waited + seen).Round(time.Millisecond))
		if waited+seen < duration {
			t.Errorf("a replica counted for %v only: its Lease holds %v", waited+seen, duration)
		}
		// Its Lease's expiry, then a's own next renewal through the watch,
		// and room for a loaded machine.
		if waited > duration+renew+3*time.Second {
			t.Errorf("a dead replica held drains up for %v, past its Lease's expiry (%v)", waited, duration)
		}
	})

	t.Run("a replica cut off from the API server keeps counting the others", func(t *testing.T) {
		path.Cut()
		cutAt := time.Now()
		// Past every Lease's duration, as a's clock counts: b renews all
		// along, but a cannot see it, nor its own renewals.
		for time.Since(cutAt) < 2*duration {
			if w := a.Word("pod-1"); !slices.Equal(w.Reaching, []string{"b"}) {
				t.Fatalf("%v after the cut: %+v", time.Since(cutAt).Round(time.Millisecond), w)
			}
			select {
			case <-a.Changed():
			case <-time.After(100 * time.Millisecond):
			}
		}
		path.Restore()
		await(ctx, t, a, "a sees b again", func(w Word) error {
			if !slices.Equal(w.Counted, []string{"b"}) {
				return fmt.Errorf("%+v", w)
			}
			return nil
		})
	})

	t.Run("a replica that stops is not waited for", func(t *testing.T) {
		stoppedAt := time.Now()
		stopB()
		await(ctx, t, a, "b is gone", func(w Word) error {
			if slices.Contains(w.Counted, "b") || !slices.Contains(w.Gone, "b") {
				return fmt.Errorf("%+v", w)
			}
			return nil
		})
		if took := time.Since(stoppedAt); took > duration {
			t.Errorf("a stopped replica was waited for %v, as long as a dead one", took)
		}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: wire.DrainLeasePrefix + "b"}, &l); err != nil {
			t.Fatal(err)
		}
		if l.Spec.HolderIdentity != nil || l.Annotations[wire.AnnotationDrainClear] != "" {
			t.Errorf("b's Lease after it stopped: %+v", l.Spec)
		}
	})
}
