package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
