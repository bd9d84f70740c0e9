package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// startFaulty starts an unnamed xdstest.FaultyBackend and returns its port.
func startFaulty(t *testing.T, addr string, delay time.Duration, failEvery int64) int32 {
	t.Helper()
	return xdstest.StartFaultyBackend(t, addr, "", delay, failEvery).Port
}

// policyInput is the reviews fixture with both endpoints behind the given
// ports and the policy's spec replaced by spec (its target kept).
func policyInput(v1, v2 int32, spec meshv1.TrafficPolicySpec) mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2))
	spec.TargetRef = in.TrafficPolicies[0].Spec.TargetRef
	in.TrafficPolicies[0].Spec = spec
	return in
}

// serving starts a server on loopback and returns it, its address and a
// context that bounds the test.
func serving(t *testing.T) (*Server, string, context.Context) {
	t.Helper()
	s, _ := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	addr, err := s.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, addr, ctx
}

// calls makes n calls one after another and counts the failures.
func calls(ctx context.Context, t *testing.T, c *xdstest.Client, n int) (failed int) {
	t.Helper()
	for range n {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := c.Call(cctx); err != nil {
			failed++
		}
		cancel()
	}
	return failed
}

// A backend that fails a third of its calls with UNAVAILABLE: without a
// retry policy grpc-go's callers see those failures; with the policy's
// retries (weft's retry_policy, read by grpc-go's own xDS client) at
// least 99% of calls succeed. The split between the two subsets stays in
// force.
func TestRetriesHideUnavailable(t *testing.T) {
	v1 := startFaulty(t, "127.0.0.2:0", 0, 3)
	v2 := startFaulty(t, "127.0.0.3:0", 0, 3)
	split := []meshv1.HTTPRoute{{Name: "split", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 50}, {Subset: "v2", Weight: 50}}}}
	s, addr, ctx := serving(t)

	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, meshv1.TrafficPolicySpec{HTTP: split})))
	client := xdstest.NewClient(t, addr, "client-1", target)
	_, _ = client.Call(ctx, grpc.WaitForReady(true))
	const n = 600
	before := calls(ctx, t, client, n)
	t.Logf("without retries: %d of %d calls failed", before, n)
	if before < n/6 {
		t.Fatalf("without retries only %d of %d calls failed; the backends fail a third", before, n)
	}

	retries := &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), RetryOn: []meshv1.RetryCondition{"unavailable"},
		Backoff: &meshv1.Backoff{BaseInterval: "1ms", MaxInterval: ptr.To[meshv1.Duration]("5ms")}}
	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, meshv1.TrafficPolicySpec{HTTP: split, Retries: retries})))
	// Wait until the client holds the retry policy: a run of calls with
	// no failure.
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		if f := calls(ctx, t, client, 30); f > 0 {
			return status.Errorf(codes.Unavailable, "%d of 30 calls failed", f)
		}
		return nil
	}); err != nil {
		t.Fatalf("the retry policy never took effect: %v", err)
	}
	after := calls(ctx, t, client, n)
	t.Logf("with 3 retries on unavailable: %d of %d calls failed", after, n)
	if after > n/100 {
		t.Errorf("with retries %d of %d calls failed, want at most 1%%", after, n)
	}
}

// A backend that takes 3 s is cut at the policy's 1 s request timeout
// (grpc-go reads it as max_stream_duration): the call fails with
// DEADLINE_EXCEEDED after about a second. A route's own timeout wins over
// the policy's.
func TestRequestTimeoutCutsASlowBackend(t *testing.T) {
	slow := startFaulty(t, "127.0.0.2:0", 3*time.Second, 0)
	slow2 := startFaulty(t, "127.0.0.3:0", 3*time.Second, 0)
	s, addr, ctx := serving(t)
	spec := meshv1.TrafficPolicySpec{Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s")}}
	s.OnModel(ctx, mesh.Build(policyInput(slow, slow2, spec)))
	client := xdstest.NewClient(t, addr, "client-1", target)

	// The first call waits for the configuration; time the ones after.
	_, _ = client.Call(ctx, grpc.WaitForReady(true))
	for range 5 {
		start := time.Now()
		_, err := client.Call(ctx)
		took := time.Since(start)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("a call to a 3 s backend under a 1 s timeout ended with %v after %v", err, took)
		}
		if took < 800*time.Millisecond || took > 1200*time.Millisecond {
			t.Errorf("the 1 s timeout cut the call after %v (want 1 s ± 20%%)", took)
		}
	}

	// A route of its own with 5 s lets the 3 s call through.
	spec.HTTP = []meshv1.HTTPRoute{{Name: "patient", Timeout: ptr.To[meshv1.Duration]("5s"),
		Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}}}
	s.OnModel(ctx, mesh.Build(policyInput(slow, slow2, spec)))
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		_, err := client.Call(ctx)
		return err
	}); err != nil {
		t.Fatalf("the route's 5 s timeout never let a 3 s call through: %v", err)
	}
}

// Fault injection on a route, read by grpc-go's own fault filter: 30% of
// calls aborted with the configured code (30 ± 3 points over 3,000 calls),
// and a fixed delay on every call adding at least the delay.
func TestFaultInjection(t *testing.T) {
	v1 := startFaulty(t, "127.0.0.2:0", 0, 0)
	v2 := startFaulty(t, "127.0.0.3:0", 0, 0)
	s, addr, ctx := serving(t)
	route := func(f *meshv1.FaultInjection) meshv1.TrafficPolicySpec {
		return meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Name: "faulty", Fault: f,
			Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 50}, {Subset: "v2", Weight: 50}}}}}
	}
	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, route(&meshv1.FaultInjection{
		Abort: &meshv1.FaultAbort{GRPCStatus: ptr.To[int32](int32(codes.ResourceExhausted)), Percentage: 30}}))))
	client := xdstest.NewClient(t, addr, "client-1", target)
	// Wait for the policy: the first aborted call.
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		_, err := client.Call(ctx, grpc.WaitForReady(true))
		if status.Code(err) != codes.ResourceExhausted {
			return status.Errorf(codes.Unknown, "no aborted call yet (last: %v)", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	aborted := 0
	for range n {
		_, err := client.Call(ctx)
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			aborted++
		default:
			t.Fatalf("a call failed with %v, not the injected RESOURCE_EXHAUSTED", err)
		}
	}
	share := 100 * float64(aborted) / n
	t.Logf("aborted %d of %d calls (%.1f%%)", aborted, n, share)
	if share < 27 || share > 33 {
		t.Errorf("%.1f%% of calls aborted, want 30 ± 3", share)
	}

	const delay = 1 * time.Second
	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, route(&meshv1.FaultInjection{
		Delay: &meshv1.FaultDelay{FixedDelay: "1s", Percentage: 100}}))))
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		start := time.Now()
		if _, err := client.Call(ctx); err != nil {
			return err
		}
		if took := time.Since(start); took < delay {
			return status.Errorf(codes.Unknown, "a call took %v, no delay yet", took)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		start := time.Now()
		if _, err := client.Call(ctx); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < delay {
			t.Errorf("a call under a 1 s fault delay took %v", took)
		}
	}
}

// Ring hash on a header keeps each value on one backend: 1,000 calls of
// one user all reach the same backend, and users as a whole reach both.
func TestRingHashKeepsAHeaderOnOneBackend(t *testing.T) {
	v1 := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "v1", 0, 0).Port
	v2 := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "v2", 0, 0).Port
	s, addr, ctx := serving(t)
	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, meshv1.TrafficPolicySpec{LoadBalancer: &meshv1.LoadBalancer{
		Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Header: "x-user"}}})))
	client := xdstest.NewClient(t, addr, "client-1", target)
	as := func(user string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-user", user) }
	// Wait until both backends are known and hashing is in force: one
	// user's calls stick while users spread.
	seen := map[string]bool{}
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		for i := range 50 {
			b, err := client.Call(as(fmt.Sprintf("user-%d", i)), grpc.WaitForReady(true))
			if err != nil {
				return err
			}
			seen[b] = true
		}
		if len(seen) < 2 {
			return fmt.Errorf("50 users reached only %v", seen)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		got := map[string]int{}
		for range 1000 {
			b, err := client.Call(as(user))
			if err != nil {
				t.Fatal(err)
			}
			got[b]++
		}
		if len(got) != 1 {
			t.Errorf("user %s's 1,000 calls reached %v, want one backend", user, got)
		}
	}
}

// A connection pool of one request in flight: of five concurrent calls to
// a slow backend one goes through and the others fail at once with
// UNAVAILABLE instead of queueing.
func TestMaxRequestsRejectsTheExcess(t *testing.T) {
	v1 := startFaulty(t, "127.0.0.2:0", time.Second, 0)
	v2 := startFaulty(t, "127.0.0.3:0", time.Second, 0)
	s, addr, ctx := serving(t)
	s.OnModel(ctx, mesh.Build(policyInput(v1, v2, meshv1.TrafficPolicySpec{ConnectionPool: &meshv1.ConnectionPool{MaxRequests: ptr.To[int32](1)}})))
	client := xdstest.NewClient(t, addr, "client-1", target)
	if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	type result struct {
		err  error
		took time.Duration
	}
	results := make(chan result, 5)
	for range 5 {
		go func() {
			start := time.Now()
			_, err := client.Call(ctx)
			results <- result{err, time.Since(start)}
		}()
	}
	var ok, rejected int
	for range 5 {
		r := <-results
		switch {
		case r.err == nil:
			ok++
		case status.Code(r.err) == codes.Unavailable && r.took < 500*time.Millisecond:
			rejected++
		default:
			t.Errorf("a call ended with %v after %v: neither through nor rejected at once", r.err, r.took)
		}
	}
	if ok != 1 || rejected != 4 {
		t.Errorf("%d calls went through and %d were rejected at once, want 1 and 4", ok, rejected)
	}
}

// Outlier detection by failure percentage: a backend that fails every call
// is ejected within a few intervals (calls then all succeed), and taken
// back after the ejection time once it recovers.
func TestOutlierDetectionEjectsAndReadmits(t *testing.T) {
	bad := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "v1", 0, 1)
	v2 := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "v2", 0, 0).Port
	s, addr, ctx := serving(t)
	s.OnModel(ctx, mesh.Build(policyInput(bad.Port, v2, meshv1.TrafficPolicySpec{OutlierDetection: &meshv1.OutlierDetection{
		FailurePercentage: ptr.To[meshv1.Percentage](50), MinimumHosts: ptr.To[int32](2), MinimumRequests: ptr.To[int32](5),
		Interval: ptr.To[meshv1.Duration]("100ms"), BaseEjectionTime: ptr.To[meshv1.Duration]("2s"),
		MaxEjectionPercent: ptr.To[meshv1.Percentage](50),
	}})))
	client := xdstest.NewClient(t, addr, "client-1", target)
	_, _ = client.Call(ctx, grpc.WaitForReady(true))

	// Ejected: a run of 50 calls with no failure, within a few seconds.
	start := time.Now()
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if f := calls(ctx, t, client, 50); f > 0 {
			return fmt.Errorf("%d of 50 calls failed", f)
		}
		return nil
	}); err != nil {
		t.Fatalf("the failing backend was never ejected: %v", err)
	}
	t.Logf("ejected within %v", time.Since(start))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("ejection took %v with a 100 ms interval", took)
	}

	// Recovered and readmitted after the ejection time: it answers again.
	bad.FailEvery.Store(0)
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		for range 20 {
			if b, err := client.Call(ctx); err == nil && b == "v1" {
				return nil
			}
		}
		return fmt.Errorf("v1 answers no call")
	}); err != nil {
		t.Fatalf("the recovered backend was never taken back: %v", err)
	}
}

// A policy on one port of a service leaves its other port alone: with
// every call on 9080 sent to v2, calls on 9081 still reach both subsets.
func TestPolicyOnOnePortLeavesTheOther(t *testing.T) {
	v1a := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "v1", 0, 0).Port
	v1b := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "v1", 0, 0).Port
	v2a := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "v2", 0, 0).Port
	v2b := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "v2", 0, 0).Port
	in := policyInput(v1a, v2a, meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Name: "all-v2",
		Backends: []meshv1.WeightedBackend{{Subset: "v2", Weight: 100}}}}})
	in.TrafficPolicies[0].Spec.TargetRef.Port = ptr.To[int32](9080)
	in.Services[0].Spec.Ports = append(in.Services[0].Spec.Ports, corev1.ServicePort{Name: "grpc2", Port: 9081})
	in.MeshServices[0].Spec.Ports = append(in.MeshServices[0].Spec.Ports, meshv1.MeshServicePort{Port: 9081, Protocol: meshv1.ProtocolGRPC})
	for i, port := range []int32{v1b, v2b} {
		in.EndpointSlices[i].Ports = append(in.EndpointSlices[i].Ports, discoveryv1.EndpointPort{Name: ptr.To("grpc2"), Port: ptr.To(port)})
	}
	s, addr, ctx := serving(t)
	model := mesh.Build(in)
	if v := model.Verdicts[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: "bookinfo", Name: "canary"}]; !v.InForce() {
		t.Fatalf("the policy is not in force: %+v", v)
	}
	s.OnModel(ctx, model)
	reach := func(target string) map[string]int {
		t.Helper()
		client := xdstest.NewClient(t, addr, "client-"+target, target)
		got := map[string]int{}
		for range 200 {
			b, err := client.Call(ctx, grpc.WaitForReady(true))
			if err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			got[b]++
		}
		return got
	}
	if got := reach("reviews.bookinfo.svc.cluster.local:9080"); got["v2"] != 200 {
		t.Errorf("port 9080, under the policy: %v, want every call on v2", got)
	}
	if got := reach("reviews.bookinfo.svc.cluster.local:9081"); got["v1"] == 0 || got["v2"] == 0 {
		t.Errorf("port 9081, without a policy: %v, want both subsets", got)
	}
}

// Least request prefers the idle backend: with one backend slow (calls pile
// up on it) and one fast, eight callers send the slow one about half of
// their calls under round robin, and clearly fewer under least request.
func TestLeastRequestPrefersTheIdleBackend(t *testing.T) {
	share := func(algorithm meshv1.LoadBalancerAlgorithm) float64 {
		t.Helper()
		slow := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "v1", 50*time.Millisecond, 0)
		fast := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "v2", 0, 0)
		s, addr, ctx := serving(t)
		s.OnModel(ctx, mesh.Build(policyInput(slow.Port, fast.Port, meshv1.TrafficPolicySpec{LoadBalancer: &meshv1.LoadBalancer{Algorithm: algorithm}})))
		client := xdstest.NewClient(t, addr, "client-"+string(algorithm), target)
		// Both backends in use before counting.
		if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
			_, _ = client.Call(ctx, grpc.WaitForReady(true))
			if slow.Served.Load() == 0 || fast.Served.Load() == 0 {
				return fmt.Errorf("not both backends reached yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slow0, fast0 := slow.Served.Load(), fast.Served.Load()
		deadline := time.Now().Add(1500 * time.Millisecond)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					if _, err := client.Call(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		s1, f1 := slow.Served.Load()-slow0, fast.Served.Load()-fast0
		pct := 100 * float64(s1) / float64(s1+f1)
		t.Logf("%s: the slow backend got %d of %d calls (%.1f%%)", algorithm, s1, s1+f1, pct)
		return pct
	}
	rr := share(meshv1.LoadBalancerRoundRobin)
	lr := share(meshv1.LoadBalancerLeastRequest)
	if rr < 40 {
		t.Fatalf("round robin sent the slow backend %.1f%% of calls; the comparison needs about half", rr)
	}
	// grpc-go samples two endpoints with replacement, so the busy one is
	// still picked when both samples fall on it: about a quarter of calls.
	if lr > 0.7*rr {
		t.Errorf("least request sent the slow backend %.1f%% of calls, round robin %.1f%%: want clearly fewer", lr, rr)
	}
}
