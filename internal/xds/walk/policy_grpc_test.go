package walk_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// The walks agree with grpc-go on every policy feature both flavours
// share: for each policy, both walks show the setting where each proxy
// reads it, and grpc-go's real calls, configured by weft's xDS server
// from the same model, show its effect.
func TestWalkAgreesWithGRPCOnPolicies(t *testing.T) {
	v1 := xdstest.StartFaultyBackend(t, "127.0.0.2:0", "reviews-v1", 0, 0)
	v2 := xdstest.StartFaultyBackend(t, "127.0.0.3:0", "reviews-v2", 0, 0)
	s, addr, ctx := serve(t, server.Options{}, nil)
	client := xdstest.NewClient(t, addr, "client-1", target)
	req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target, Method: "POST", Path: "/weft.test.Reviews/Get"}
	v1Only := []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}}}
	calls := func(ctx context.Context, n int) (got map[string]int) {
		got = map[string]int{}
		for range n {
			b, err := client.Call(ctx)
			if err != nil {
				b = status.Code(err).String()
			}
			got[b]++
		}
		return got
	}
	for _, c := range []struct {
		name string
		spec meshv1.TrafficPolicySpec
		// prepare sets the backends up; walked checks a walk's result;
		// called checks grpc-go once it holds the policy (ready says so).
		prepare func()
		walked  func(*walk.Result) error
		ready   func() bool
		called  func() error
	}{{
		name: "a 90/10 split",
		spec: meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}}}},
		walked: func(r *walk.Result) error {
			if len(r.Clusters) != 2 || r.Clusters[0].Weight != 90 || r.Clusters[1].Weight != 10 {
				return fmt.Errorf("clusters %+v, want v1 90 and v2 10", r.Clusters)
			}
			return nil
		},
		ready: func() bool { return calls(ctx, 100)["reviews-v1"] < 100 },
		called: func() error {
			if got := calls(ctx, 2000); got["reviews-v1"] < 1740 || got["reviews-v1"] > 1860 {
				return fmt.Errorf("2,000 calls went %v, want v1 90 ± 3%%", got)
			}
			return nil
		},
	}, {
		name:    "a 1 s request timeout",
		spec:    meshv1.TrafficPolicySpec{Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s")}, HTTP: v1Only},
		prepare: func() { v1.Delay.Store(int64(3 * time.Second)) },
		walked: func(r *walk.Result) error {
			if r.Action.GetTimeout().AsDuration() != time.Second || r.Action.GetMaxStreamDuration().GetMaxStreamDuration().AsDuration() != time.Second {
				return fmt.Errorf("timeout %v, max stream duration %v; want 1 s", r.Action.GetTimeout(), r.Action.GetMaxStreamDuration())
			}
			return nil
		},
		ready: func() bool {
			start := time.Now()
			_, err := client.Call(ctx)
			return status.Code(err) == codes.DeadlineExceeded && time.Since(start) < 2*time.Second
		},
		called: func() error {
			start := time.Now()
			_, err := client.Call(ctx)
			if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took < 800*time.Millisecond || took > 1200*time.Millisecond {
				return fmt.Errorf("a call to a 3 s backend ended with %v after %v, want DEADLINE_EXCEEDED after 1 s", err, took)
			}
			return nil
		},
	}, {
		name:    "three retries on unavailable",
		spec:    meshv1.TrafficPolicySpec{Retries: &meshv1.RetryPolicy{Attempts: ptr.To[int32](3), RetryOn: []meshv1.RetryCondition{"unavailable"}}, HTTP: v1Only},
		prepare: func() { v1.FailEvery.Store(3) },
		walked: func(r *walk.Result) error {
			rp := r.Action.GetRetryPolicy()
			if rp.GetNumRetries().GetValue() != 3 || !strings.Contains(rp.GetRetryOn(), "unavailable") {
				return fmt.Errorf("retry policy %v, want 3 retries on unavailable", rp)
			}
			return nil
		},
		ready: func() bool { return calls(ctx, 30)["reviews-v1"] == 30 },
		called: func() error {
			if got := calls(ctx, 300); got["reviews-v1"] != 300 {
				return fmt.Errorf("300 calls to a backend failing a third ended %v, want none failed", got)
			}
			return nil
		},
	}, {
		name: "30% aborted with RESOURCE_EXHAUSTED",
		spec: meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}},
			Fault: &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: ptr.To[int32](int32(codes.ResourceExhausted)), Percentage: 30}}}}},
		walked: func(r *walk.Result) error {
			if a := r.Fault.GetAbort(); a.GetGrpcStatus() != uint32(codes.ResourceExhausted) || a.GetPercentage().GetNumerator() != 30 {
				return fmt.Errorf("fault %v, want RESOURCE_EXHAUSTED on 30%%", r.Fault)
			}
			return nil
		},
		ready: func() bool { return calls(ctx, 50)[codes.ResourceExhausted.String()] > 0 },
		called: func() error {
			if got := calls(ctx, 2000)[codes.ResourceExhausted.String()]; got < 540 || got > 660 {
				return fmt.Errorf("%d of 2,000 calls aborted, want 30 ± 3%%", got)
			}
			return nil
		},
	}, {
		name: "ring hash on x-user",
		spec: meshv1.TrafficPolicySpec{LoadBalancer: &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Header: "x-user"}}},
		walked: func(r *walk.Result) error {
			if h := r.Action.GetHashPolicy(); len(h) != 1 || h[0].GetHeader().GetHeaderName() != "x-user" || r.Clusters[0].Config.GetLbPolicy() != clusterv3.Cluster_RING_HASH {
				return fmt.Errorf("hash policy %v, lb %v; want x-user on a ring hash", h, r.Clusters[0].Config.GetLbPolicy())
			}
			return nil
		},
		ready: func() bool {
			return len(calls(metadata.AppendToOutgoingContext(ctx, "x-user", "alice"), 50)) == 1
		},
		called: func() error {
			for _, u := range []string{"alice", "bob", "carol"} {
				if got := calls(metadata.AppendToOutgoingContext(ctx, "x-user", u), 300); len(got) != 1 {
					return fmt.Errorf("user %s's calls went %v, want one backend", u, got)
				}
			}
			return nil
		},
	}, {
		name:    "one request at a time",
		spec:    meshv1.TrafficPolicySpec{ConnectionPool: &meshv1.ConnectionPool{MaxRequests: ptr.To[int32](1)}, HTTP: v1Only},
		prepare: func() { v1.Delay.Store(int64(500 * time.Millisecond)) },
		walked: func(r *walk.Result) error {
			if th := r.Clusters[0].Config.GetCircuitBreakers().GetThresholds(); len(th) != 1 || th[0].GetMaxRequests().GetValue() != 1 {
				return fmt.Errorf("circuit breakers %v, want max_requests 1", th)
			}
			return nil
		},
		ready:  func() bool { return client.Burst(ctx, 2).Refused == 1 },
		called: func() error { return client.HoldsOneAtATime(ctx, 4) },
	}, {
		name: "outlier detection by failure percentage",
		spec: meshv1.TrafficPolicySpec{OutlierDetection: &meshv1.OutlierDetection{
			FailurePercentage: ptr.To[meshv1.Percentage](50), MinimumHosts: ptr.To[int32](2), MinimumRequests: ptr.To[int32](5),
			Interval: ptr.To[meshv1.Duration]("100ms"), BaseEjectionTime: ptr.To[meshv1.Duration]("30s"), MaxEjectionPercent: ptr.To[meshv1.Percentage](50)}},
		prepare: func() { v1.FailEvery.Store(1) },
		walked: func(r *walk.Result) error {
			od := r.Clusters[0].Config.GetOutlierDetection()
			if od.GetFailurePercentageThreshold().GetValue() != 50 || od.GetEnforcingFailurePercentage().GetValue() != 100 ||
				od.GetInterval().AsDuration() != 100*time.Millisecond || od.GetMaxEjectionPercent().GetValue() != 50 {
				return fmt.Errorf("outlier detection %v, want failure percentage 50 enforced every 100 ms, at most 50%% ejected", od)
			}
			return nil
		},
		ready: func() bool { return calls(ctx, 50)["reviews-v2"] == 50 },
		called: func() error {
			if got := calls(ctx, 500); got["reviews-v2"] != 500 {
				return fmt.Errorf("500 calls went %v, want all to v2 with v1 ejected", got)
			}
			return nil
		},
	}} {
		t.Run(c.name, func(t *testing.T) {
			v1.Delay.Store(0)
			v1.FailEvery.Store(0)
			if c.prepare != nil {
				c.prepare()
			}
			model := mesh.Build(reviews("127.0.0.2", "127.0.0.3", v1.Port, v2.Port, c.spec))
			sh, err := translate.BuildShared(model, nil, translate.Options{})
			if err != nil {
				t.Fatal(err)
			}
			for flavour, w := range map[wire.Flavour]func(walk.Request) (*walk.Result, error){
				wire.FlavourGRPC: walk.New(sh.GRPC).Proxyless, wire.FlavourEnvoy: walk.New(sh.Envoy).Sidecar} {
				res, err := w(req)
				if err == nil {
					err = c.walked(res)
				}
				if err != nil {
					t.Errorf("%s walk: %v", flavour, err)
				}
			}
			s.OnModel(ctx, model)
			if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil && status.Code(err) != codes.DeadlineExceeded &&
				status.Code(err) != codes.ResourceExhausted && status.Code(err) != codes.Unavailable {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for !c.ready() {
				if time.Now().After(deadline) {
					t.Fatal("grpc-go never showed the policy in force")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := c.called(); err != nil {
				t.Errorf("grpc-go: %v", err)
			}
		})
	}
}
