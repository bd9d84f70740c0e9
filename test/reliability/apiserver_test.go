package reliability

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/leader"
	"github.com/weftmesh/weft/internal/testenv"
)

var (
	steppedDown = regexp.MustCompile(`"msg":"No longer leading: the status writers stopped"`)
	leading     = regexp.MustCompile(`"msg":"Leading: starting the status writers"`)
)

// count is how often re matches a replica's log.
func count(rp *replica, re *regexp.Regexp) int { return len(re.FindAllIndex(rp.proc.Log(), -1)) }

// TestAPIServerLost: the network between both replicas and the API server
// is cut for the outage (WEFT_OUTAGE, two minutes by default) under
// continuous calls. No replica exits: the leader loses its lease and
// stops writing status, and both go on serving xDS and answering their
// probes; no call fails; a proxy that starts meanwhile is served the last
// configuration. Once the API server is back, a replica leads again and a
// change reaches every proxy and shows Ready within 60 s.
func TestAPIServerLost(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	down := outage(t)
	ctx, r, clients, l := scenario(t, 2, down+8*time.Minute)
	if r == nil {
		return
	}
	leadsBefore := count(r.replicas[0], leading) + count(r.replicas[1], leading)

	r.api.Cut()
	cut := time.Now()
	// The leader steps down once it cannot renew its lease.
	if err := testenv.Eventually(ctx, leader.DefaultLeaseDuration+time.Minute, func(context.Context) error {
		if count(r.replicas[0], steppedDown)+count(r.replicas[1], steppedDown) == 0 {
			return fmt.Errorf("no replica stepped down")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	stepped := time.Since(cut)
	// A proxy that starts during the outage is served what the replicas
	// know.
	fresh := r.clients("fresh", 1)
	for time.Since(cut) < down {
		for _, rp := range r.replicas {
			rp.alive(t)
			if err := rp.healthy(ctx); err != nil {
				t.Errorf("during the outage: %v", err)
			}
		}
		time.Sleep(5 * time.Second)
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d calls failed while the API server was out of reach", n)
	}

	r.api.Restore()
	back := time.Now()
	if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		if count(r.replicas[0], leading)+count(r.replicas[1], leading) == leadsBefore {
			return fmt.Errorf("no replica leads again")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	led := time.Since(back)
	r.route("v2")
	reached, err := r.reach(append(clients, fresh...), "v2", time.Minute)
	if err != nil {
		t.Fatalf("a change after the API server came back: %v", err)
	}
	if err := r.ready(time.Minute); err != nil {
		t.Fatalf("the policy after the API server came back: %v", err)
	}
	caughtUp := time.Since(back)
	if caughtUp > time.Minute {
		t.Errorf("the change was in force and Ready %v after the API server came back, want within 60 s", caughtUp.Round(time.Second))
	}
	for _, rp := range r.replicas {
		rp.alive(t)
	}
	l.check(t, fmt.Sprintf("the API server out of reach for %v", down))
	t.Logf("API server out of reach %v: the leader stepped down after %v; back, a replica led again in %v, a change reached every proxy in %v and was Ready %v after the API server returned",
		down, stepped.Round(100*time.Millisecond), led.Round(100*time.Millisecond), reached.Round(100*time.Millisecond), caughtUp.Round(100*time.Millisecond))
}

// TestLeaderKilled: of two replicas, the one that leads is killed
// (SIGKILL: it cannot give its lease up). The other leads within the lease
// and a retry, a change made meanwhile is Ready once it does, and the
// status of the mesh's objects is not rewritten in a loop: after the new
// leader caught up, 30 s pass without a write.
func TestLeaderKilled(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	if !testenv.InOwnNetworkNamespace(t, backendIPs["v1"], backendIPs["v2"]) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	r := newRig(ctx, t, 2)
	r.route("v1")
	clients := r.clients("client", 4)
	if err := r.ready(time.Minute); err != nil {
		t.Fatal(err)
	}
	ids := map[string]*replica{}
	for _, rp := range r.replicas {
		id, err := rp.identity(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = rp
	}
	var old string
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		h, err := r.holder(ctx)
		if err != nil {
			return err
		}
		if ids[h] == nil {
			return fmt.Errorf("the lease is held by %q", h)
		}
		old = h
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Status writes from here on, counted by a watch on each kind.
	writes := watchWrites(ctx, t, r)

	ids[old].proc.Kill()
	killed := time.Now()
	r.route("v2")
	var took time.Duration
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		h, err := r.holder(ctx)
		if err != nil {
			return err
		}
		if h == old || ids[h] == nil {
			return fmt.Errorf("the lease is held by %q", h)
		}
		took = time.Since(killed)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// client-go's candidates look every retry period (jittered by 1.2);
	// the loaded machine gets two seconds more.
	if bound := leader.DefaultLeaseDuration + 2*leader.DefaultRetryPeriod*12/10 + 2*time.Second; took > bound {
		t.Errorf("a new leader after %v, want within the lease and a retry (%v)", took.Round(100*time.Millisecond), bound)
	}
	if _, err := r.reach(clients, "v2", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.ready(time.Minute); err != nil {
		t.Fatalf("the change under the new leader: %v", err)
	}
	caughtUp := time.Now()
	time.Sleep(30 * time.Second)
	after := writes.since(caughtUp)
	total := writes.since(killed)
	if after > 0 {
		t.Errorf("%d status writes in the 30 s after the new leader caught up, want none: a write loop", after)
	}
	t.Logf("leader killed: a new leader after %v; %d status writes while it caught up, %d in the next 30 s", took.Round(100*time.Millisecond), total, after)
}

// writeLog counts the writes a watch sees.
type writeLog struct {
	ch  chan time.Time
	all []time.Time
}

func (w *writeLog) since(from time.Time) int {
	for {
		select {
		case at := <-w.ch:
			w.all = append(w.all, at)
			continue
		default:
		}
		break
	}
	n := 0
	for _, at := range w.all {
		if !at.Before(from) {
			n++
		}
	}
	return n
}

// watchWrites watches the mesh's objects of every kind and records each
// change to one of them.
func watchWrites(ctx context.Context, t *testing.T, r *rig) *writeLog {
	t.Helper()
	wc, err := client.NewWithWatch(r.env.Config, client.Options{Scheme: r.env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w := &writeLog{ch: make(chan time.Time, 10000)}
	for _, list := range []client.ObjectList{&meshv1.MeshServiceList{}, &meshv1.TrafficPolicyList{}, &meshv1.PeerAuthenticationList{}} {
		wi, err := wc.Watch(ctx, list, client.InNamespace(appNS))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wi.Stop)
		go func() {
			for ev := range wi.ResultChan() {
				if ev.Type == watch.Modified {
					w.ch <- time.Now()
				}
			}
		}()
	}
	return w
}
