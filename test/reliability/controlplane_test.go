package reliability

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testenv"
)

// nodes are the clients' node ids.
func nodes(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d.%s", prefix, i, appNS))
	}
	return out
}

// TestControlPlaneKilled: the only replica of the controller is killed
// (SIGKILL, as when its node fails) under continuous calls and stays down
// for the outage (WEFT_OUTAGE, two minutes by default). The proxies keep
// their configuration: no call fails. Started again, it serves a new
// proxy at once, has every proxy's acknowledgement again, and a change
// reaches them all.
func TestControlPlaneKilled(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	down := outage(t)
	ctx, r, clients, l := scenario(t, 1, down+10*time.Minute)
	if r == nil {
		return
	}
	rp := r.replicas[0]

	rp.proc.Kill()
	time.Sleep(down)
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d calls failed while the controller was down", n)
	}
	rp.proc.Start()
	restarted := time.Now()

	// It serves again (its proxy status answers), and a proxy that starts
	// now is served.
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error { return synced(ctx, rp.xdsAddr, nil) }); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	fresh := r.clients("fresh", 1)
	served := time.Since(restarted)
	// Every proxy that was connected acknowledges again, as soon as it is
	// back: a grpc-go client reconnects on its own backoff (from 1 s,
	// 1.6 times longer each try, up to 120 s), which after minutes down
	// decides when it is back, not the controller.
	// Two backoffs compound (the channel's and the stream's), each to
	// 120 s with 20 % jitter: six minutes bound the wait.
	acked, err := ackTimes(ctx, rp, append(nodes("client", 4), nodes("fresh", 1)...), 6*time.Minute)
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	var resynced, slowest time.Duration
	for node, at := range acked {
		back, err := connectedAt(rp, node, restarted)
		if err != nil {
			t.Fatal(err)
		}
		resynced = max(resynced, at.Sub(restarted))
		slowest = max(slowest, at.Sub(back))
		if at.Sub(back) > time.Minute {
			t.Errorf("%s acknowledged %v after it connected again, want within 60 s", node, at.Sub(back).Round(time.Second))
		}
	}
	// A change reaches every proxy, and the policy says so.
	r.route("v2")
	took, err := r.reach(append(clients, fresh...), "v2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ready(time.Minute); err != nil {
		t.Fatalf("the policy after the restart: %v", err)
	}
	l.check(t, fmt.Sprintf("the controller killed for %v", down))
	t.Logf("down %v; after the restart a new proxy was served in %v; every proxy acknowledged within %v of connecting again, all within %v of the restart; a change reached them in %v",
		down, served.Round(100*time.Millisecond), slowest.Round(100*time.Millisecond), resynced.Round(100*time.Millisecond), took.Round(100*time.Millisecond))
}

// TestReplicaKilledEvery30s: two replicas behind one Service; every 30 s
// one of them is killed and started again, for the outage. Calls go on
// without pause and none fails; every few seconds the route changes, and
// each change reaches every proxy (the delay is measured; its p99
// logged).
func TestReplicaKilledEvery30s(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	span := outage(t)
	_, r, clients, l := scenario(t, 2, span+8*time.Minute)
	if r == nil {
		return
	}

	var delays []time.Duration
	kills := 0
	start := time.Now()
	subset := "v1"
	// One replica is down for 10 s of every 30, the other serving; then
	// the other's turn.
	var down *replica
	var upAt time.Time
	for next := start; time.Since(start) < span; {
		if down != nil && !time.Now().Before(upAt) {
			down.proc.Start()
			down = nil
		}
		if !time.Now().Before(next) {
			if down != nil {
				down.proc.Start()
			}
			down, upAt = r.replicas[kills%2], time.Now().Add(10*time.Second)
			down.proc.Kill()
			kills++
			next = next.Add(30 * time.Second)
		}
		subset = map[string]string{"v1": "v2", "v2": "v1"}[subset]
		r.route(subset)
		took, err := r.reach(clients, subset, time.Minute)
		if err != nil {
			t.Fatalf("change %d: %v", len(delays)+1, err)
		}
		delays = append(delays, took)
		time.Sleep(2 * time.Second)
	}
	l.check(t, fmt.Sprintf("%d kills over %v", kills, span))
	t.Logf("%d route changes reached all 4 proxies: p50 %v, p99 %v, max %v", len(delays),
		percentile(delays, 50).Round(10*time.Millisecond), percentile(delays, 99).Round(10*time.Millisecond),
		percentile(delays, 100).Round(10*time.Millisecond))
}
