package test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// trafficMesh is a controller on a real API server with one service,
// shop/reviews: gRPC ports 9080 and 9081, subsets v1 and v2, one pod of
// each version serving both ports, and a grpc-go xDS client per port. The
// test changes its TrafficPolicies and its backends' behaviour; every
// proxy's configuration comes from weft alone.
type trafficMesh struct {
	t   *testing.T
	ctx context.Context
	c   client.Client
	// backends by version, then port; clients by port.
	backends map[string]map[int32]*xdstest.FaultyBackend
	clients  map[int32]*xdstest.Client
	// ads is the xDS server's address (its client status too).
	ads string
}

const trafficNamespace = "shop"

func newTrafficMesh(ctx context.Context, t *testing.T) *trafficMesh {
	env, ads := startController(ctx, t)
	m := &trafficMesh{t: t, ctx: ctx, c: env.Client, backends: map[string]map[int32]*xdstest.FaultyBackend{}, clients: map[int32]*xdstest.Client{}, ads: ads}
	ns := trafficNamespace
	m.must(m.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	m.must(m.c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")},
			{Name: "grpc2", Port: 9081, TargetPort: intstr.FromString("grpc2")}},
	}}))
	m.must(m.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews",
		Ports:       []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}, {Port: 9081, Protocol: meshv1.ProtocolGRPC}},
		Subsets: []meshv1.Subset{
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		},
	}}))
	for version, ip := range map[string]string{"v1": "192.0.2.31", "v2": "192.0.2.32"} {
		name := "reviews-" + version
		m.backends[version] = map[int32]*xdstest.FaultyBackend{
			9080: xdstest.StartFaultyBackend(t, ip+":0", version, 0, 0),
			9081: xdstest.StartFaultyBackend(t, ip+":0", version, 0, 0),
		}
		m.must(m.c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{"app": "reviews", "version": version}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
		m.must(m.c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(m.backends[version][9080].Port)},
				{Name: ptr.To("grpc2"), Port: ptr.To(m.backends[version][9081].Port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}}},
		}))
	}
	for _, port := range []int32{9080, 9081} {
		cl := xdstest.NewClient(t, ads, fmt.Sprintf("client-%d.%s", port, ns), fmt.Sprintf("reviews.%s.svc.cluster.local:%d", ns, port))
		if _, err := cl.Call(ctx, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("port %d: the client never reached the service: %v", port, err)
		}
		m.clients[port] = cl
	}
	return m
}

func (m *trafficMesh) must(err error) {
	m.t.Helper()
	if err != nil {
		m.t.Fatal(err)
	}
}

// policy creates or replaces the spec of a TrafficPolicy on reviews and
// waits until it is Ready in its new generation: every client that it
// shapes acknowledged it.
func (m *trafficMesh) policy(t *testing.T, name string, spec meshv1.TrafficPolicySpec) {
	t.Helper()
	spec.TargetRef.Name = "reviews"
	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: trafficNamespace, Name: name}}
	err := m.c.Get(m.ctx, client.ObjectKeyFromObject(tp), tp)
	switch {
	case err == nil:
		m.must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := m.c.Get(m.ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
				return err
			}
			tp.Spec = spec
			return m.c.Update(m.ctx, tp)
		}))
	case client.IgnoreNotFound(err) == nil:
		tp.Spec = spec
		m.must(m.c.Create(m.ctx, tp))
	default:
		t.Fatal(err)
	}
	gen := tp.Generation
	if err := testenv.Eventually(m.ctx, time.Minute, func(ctx context.Context) error {
		if err := m.c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		ready := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady)
		if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != gen {
			return fmt.Errorf("TrafficPolicy %s: Ready %+v", name, ready)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// remove deletes a TrafficPolicy.
func (m *trafficMesh) remove(t *testing.T, name string) {
	t.Helper()
	m.must(client.IgnoreNotFound(m.c.Delete(m.ctx, &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: trafficNamespace, Name: name}})))
}

// reset puts every backend back to answering at once, without failures.
func (m *trafficMesh) reset() {
	for _, byPort := range m.backends {
		for _, b := range byPort {
			b.Delay.Store(0)
			b.FailEvery.Store(0)
		}
	}
}

// share makes n calls on a port and counts them by backend, failures by
// their status code.
func (m *trafficMesh) share(ctx context.Context, port int32, n int) map[string]int {
	got := map[string]int{}
	for range n {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		b, err := m.clients[port].Call(callCtx)
		cancel()
		if err != nil {
			b = status.Code(err).String()
		}
		got[b]++
	}
	return got
}

func pct(part, whole int) float64 { return 100 * float64(part) / float64(whole) }

// trace runs weft trace for the client of a port, for the call the
// clients make (with headers as name=value), reading the mesh's objects
// from the API server as the command does.
func (m *trafficMesh) trace(t *testing.T, port int32, headers ...string) *cli.TraceReport {
	t.Helper()
	req, err := cli.ParseTraceRequest(fmt.Sprintf("grpc://reviews.%s.svc.cluster.local:%d/weft.test.Reviews/Get", trafficNamespace, port), headers, "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := cli.TraceProxy(m.ctx, cli.TraceOptions{Addr: m.ads, Pod: fmt.Sprintf("client-%d", port), Namespace: trafficNamespace,
		Objects: m.c, Controller: cli.Controller{Namespace: "weft-system", Deployment: "weft-controller"}}, req)
	if err != nil {
		t.Fatalf("weft trace: %v", err)
	}
	if rep.Note != "" {
		t.Fatalf("weft trace: %s", rep.Note)
	}
	return rep
}

// agrees checks weft trace against where grpc-go's calls on a port went
// (got, by backend version; failures by status code): every backend a
// call reached is an endpoint of a cluster the trace names; when each
// cluster holds one backend, each one's share of the calls that reached a
// backend is its share of the trace's weights, within tolerance points;
// the trace names the TrafficPolicy (policy, "" for none) in its current
// generation, acknowledged by the client. It returns the trace.
func (m *trafficMesh) agrees(t *testing.T, port int32, policy string, got map[string]int, tolerance float64, headers ...string) *cli.TraceReport {
	t.Helper()
	rep := m.trace(t, port, headers...)
	versionAt := map[string]string{}
	for version, ports := range m.backends {
		ip := map[string]string{"v1": "192.0.2.31", "v2": "192.0.2.32"}[version]
		versionAt[fmt.Sprintf("%s:%d", ip, ports[port].Port)] = version
	}
	inTrace := map[string]bool{}
	var total uint32
	weights := map[string]uint32{}
	single := true
	for _, c := range rep.Outbound.Clusters {
		total += c.Weight
		if len(c.Endpoints) != 1 {
			single = false
		}
		for _, e := range c.Endpoints {
			v, ok := versionAt[e]
			if !ok {
				t.Errorf("weft trace names endpoint %s of %s, which is no backend", e, c.Name)
			}
			inTrace[v] = true
			weights[v] += c.Weight
		}
	}
	reached := 0
	for b, n := range got {
		if b != "v1" && b != "v2" {
			continue
		}
		reached += n
		if !inTrace[b] {
			t.Errorf("grpc-go's calls reached %s (%d of them); weft trace's clusters are %v", b, n, rep.Outbound.Names())
		}
	}
	if single && reached > 0 && total > 0 {
		for v, w := range weights {
			want, share := 100*float64(w)/float64(total), pct(got[v], reached)
			if share < want-tolerance || share > want+tolerance {
				t.Errorf("weft trace gives %s %.1f%% (weight %d of %d); grpc-go sent it %.1f%% of the calls", v, want, w, total, share)
			}
		}
	}
	var tp meshv1.TrafficPolicy
	switch {
	case policy == "" && rep.Policy != nil:
		t.Errorf("weft trace names TrafficPolicy %s, there is none on port %d", rep.Policy.Name, port)
	case policy != "":
		m.must(m.c.Get(m.ctx, client.ObjectKey{Namespace: trafficNamespace, Name: policy}, &tp))
		if p := rep.Policy; p == nil || p.Name != policy || p.Generation != tp.Generation || p.Acknowledged != tp.Generation {
			t.Errorf("weft trace names the policy %+v; want %s in generation %d, acknowledged", p, policy, tp.Generation)
		}
	}
	return rep
}

// TestTrafficPolicyThroughTheAPIServer: each TrafficPolicy feature that
// grpc-go honours, set through the real API server and measured on real
// calls once the policy is Ready (the clients acknowledged it).
func TestTrafficPolicyThroughTheAPIServer(t *testing.T) {
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.31", "192.0.2.32") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	m := newTrafficMesh(ctx, t)
	to := func(subsets ...meshv1.WeightedBackend) []meshv1.WeightedBackend { return subsets }
	v1, v2 := meshv1.WeightedBackend{Subset: "v1", Weight: 100}, meshv1.WeightedBackend{Subset: "v2", Weight: 100}

	t.Run("split 90/10 and 50/50 over 10,000 calls", func(t *testing.T) {
		for _, w := range []int32{90, 50} {
			m.policy(t, "policy", meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: to(
				meshv1.WeightedBackend{Subset: "v1", Weight: w}, meshv1.WeightedBackend{Subset: "v2", Weight: 100 - w})}}})
			got := m.share(ctx, 9080, 10000)
			share := pct(got["v1"], 10000)
			t.Logf("%d/%d: %v (v1 %.2f%%)", w, 100-w, got, share)
			if share < float64(w)-2 || share > float64(w)+2 {
				t.Errorf("v1 got %.2f%% of 10,000 calls, want %d ± 2", share, w)
			}
			m.agrees(t, 9080, "policy", got, 2)
		}
	})

	t.Run("a header match sends only marked calls to the canary", func(t *testing.T) {
		m.policy(t, "policy", meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{
			{Name: "testers", Matches: []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{Name: "x-canary", Value: ptr.To("true")}}}}, Backends: to(v2)},
			{Name: "everyone", Backends: to(v1)},
		}})
		marked := m.share(metadata.AppendToOutgoingContext(ctx, "x-canary", "true"), 9080, 500)
		unmarked := m.share(ctx, 9080, 500)
		other := m.share(metadata.AppendToOutgoingContext(ctx, "x-canary", "false"), 9080, 500)
		t.Logf("marked %v, unmarked %v, x-canary: false %v", marked, unmarked, other)
		if marked["v2"] != 500 || unmarked["v1"] != 500 || other["v1"] != 500 {
			t.Errorf("marked calls went %v, unmarked %v and x-canary: false %v; want only the marked ones on v2", marked, unmarked, other)
		}
		for _, c := range []struct {
			got    map[string]int
			header []string
			route  string
		}{{marked, []string{"x-canary=true"}, "testers"}, {unmarked, nil, "everyone"}, {other, []string{"x-canary=false"}, "everyone"}} {
			if rep := m.agrees(t, 9080, "policy", c.got, 0, c.header...); rep.Policy.RouteName != c.route {
				t.Errorf("weft trace %v: route %q of the policy, want %q", c.header, rep.Policy.RouteName, c.route)
			}
		}
	})

	t.Run("policies on different ports stay apart and are both tracked", func(t *testing.T) {
		m.remove(t, "policy")
		m.policy(t, "port-9080", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Port: ptr.To[int32](9080)}, HTTP: []meshv1.HTTPRoute{{Backends: to(v2)}}})
		got := m.share(ctx, 9081, 200)
		if got["v1"] == 0 || got["v2"] == 0 {
			t.Errorf("port 9081, without a policy: %v, want both subsets", got)
		}
		m.agrees(t, 9081, "", got, 0)
		// Both policies Ready means each one's own client acknowledged it.
		m.policy(t, "port-9081", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Port: ptr.To[int32](9081)}, HTTP: []meshv1.HTTPRoute{{Backends: to(v1)}}})
		a, b := m.share(ctx, 9080, 200), m.share(ctx, 9081, 200)
		t.Logf("port 9080 %v, port 9081 %v", a, b)
		if a["v2"] != 200 || b["v1"] != 200 {
			t.Errorf("port 9080 went %v (want all v2) and port 9081 %v (want all v1)", a, b)
		}
		m.agrees(t, 9080, "port-9080", a, 0)
		m.agrees(t, 9081, "port-9081", b, 0)
		m.remove(t, "port-9080")
		m.remove(t, "port-9081")
	})

	t.Run("a 3 s backend is cut at a 1 s request timeout, a route's own timeout wins", func(t *testing.T) {
		m.backends["v1"][9080].Delay.Store(int64(3 * time.Second))
		t.Cleanup(m.reset)
		m.policy(t, "policy", meshv1.TrafficPolicySpec{Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s")},
			HTTP: []meshv1.HTTPRoute{{Backends: to(v1)}}})
		for range 5 {
			start := time.Now()
			_, err := m.clients[9080].Call(ctx)
			took := time.Since(start)
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("a call to a 3 s backend under a 1 s timeout ended with %v after %v", err, took)
			}
			if took < 800*time.Millisecond || took > 1200*time.Millisecond {
				t.Errorf("the 1 s timeout cut the call after %v, want 1 s ± 20%%", took)
			} else {
				t.Logf("cut after %v", took.Round(time.Millisecond))
			}
		}
		if rep := m.agrees(t, 9080, "policy", nil, 0); rep.Outbound.Action.GetTimeout().AsDuration() != time.Second {
			t.Errorf("weft trace shows the route's timeout as %v, want 1s", rep.Outbound.Action.GetTimeout())
		}
		// A route's own timeout wins over the policy's: 5 s lets it through.
		m.policy(t, "policy", meshv1.TrafficPolicySpec{Timeouts: &meshv1.Timeouts{Request: ptr.To[meshv1.Duration]("1s")},
			HTTP: []meshv1.HTTPRoute{{Timeout: ptr.To[meshv1.Duration]("5s"), Backends: to(v1)}}})
		got, err := m.clients[9080].Call(ctx)
		if err != nil || got != "v1" {
			t.Errorf("under the route's 5 s timeout a 3 s call ended with %q, %v", got, err)
		}
		if rep := m.agrees(t, 9080, "policy", map[string]int{got: 1}, 0); rep.Outbound.Action.GetTimeout().AsDuration() != 5*time.Second {
			t.Errorf("weft trace shows the route's timeout as %v, want 5s", rep.Outbound.Action.GetTimeout())
		}
	})

	t.Run("30% aborts with the configured code and a 1 s delay", func(t *testing.T) {
		m.policy(t, "policy", meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: to(v1),
			Fault: &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{GRPCStatus: ptr.To[int32](int32(codes.ResourceExhausted)), Percentage: 30}}}}})
		const n = 3000
		got := m.share(ctx, 9080, n)
		aborted := got[codes.ResourceExhausted.String()]
		t.Logf("%v (%.1f%% aborted)", got, pct(aborted, n))
		if got["v1"]+aborted != n {
			t.Errorf("calls ended %v: some neither reached v1 nor were aborted with RESOURCE_EXHAUSTED", got)
		}
		if s := pct(aborted, n); s < 27 || s > 33 {
			t.Errorf("%.1f%% of calls aborted, want 30 ± 3", s)
		}
		if ab := m.agrees(t, 9080, "policy", got, 0).Outbound.Fault.GetAbort(); ab.GetPercentage().GetNumerator() != 30 || ab.GetGrpcStatus() != uint32(codes.ResourceExhausted) {
			t.Errorf("weft trace shows the abort as %v; grpc-go aborted %.1f%% with %v", ab, pct(aborted, n), codes.ResourceExhausted)
		}
		m.policy(t, "policy", meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: to(v1),
			Fault: &meshv1.FaultInjection{Delay: &meshv1.FaultDelay{FixedDelay: "1s", Percentage: 100}}}}})
		if dl := m.agrees(t, 9080, "policy", nil, 0).Outbound.Fault.GetDelay(); dl.GetFixedDelay().AsDuration() != time.Second || dl.GetPercentage().GetNumerator() != 100 {
			t.Errorf("weft trace shows the delay as %v, want 1s for every call", dl)
		}
		for range 3 {
			start := time.Now()
			if _, err := m.clients[9080].Call(ctx); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took < time.Second {
				t.Errorf("a call under a 1 s fault delay took %v", took)
			} else {
				t.Logf("a delayed call took %v", took.Round(time.Millisecond))
			}
		}
	})

	t.Run("a max-requests limit rejects the excess at once", func(t *testing.T) {
		m.backends["v1"][9080].Delay.Store(int64(time.Second))
		t.Cleanup(m.reset)
		m.policy(t, "policy", meshv1.TrafficPolicySpec{ConnectionPool: &meshv1.ConnectionPool{MaxRequests: ptr.To[int32](1)},
			HTTP: []meshv1.HTTPRoute{{Backends: to(v1)}}})
		// grpc-go acknowledges a Cluster before its balancer takes the new
		// limit: wait until a second call at once is refused.
		if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			if b := m.clients[9080].Burst(ctx, 2); b.Refused != 1 {
				return fmt.Errorf("of 2 calls at once %d were refused", b.Refused)
			}
			return nil
		}); err != nil {
			t.Fatalf("the limit never came into force: %v", err)
		}
		if err := m.clients[9080].HoldsOneAtATime(ctx, 5); err != nil {
			t.Error(err)
		}
		rep := m.agrees(t, 9080, "policy", map[string]int{"v1": 1}, 0)
		if th := rep.Outbound.Clusters[0].Config.GetCircuitBreakers().GetThresholds(); len(th) != 1 || th[0].GetMaxRequests().GetValue() != 1 {
			t.Errorf("weft trace shows the cluster's limits as %v, want one request at a time", th)
		}
	})

	t.Run("outlier detection ejects a failing backend and takes it back", func(t *testing.T) {
		bad := m.backends["v1"][9080]
		bad.FailEvery.Store(1)
		t.Cleanup(m.reset)
		m.policy(t, "policy", meshv1.TrafficPolicySpec{OutlierDetection: &meshv1.OutlierDetection{
			FailurePercentage: ptr.To[meshv1.Percentage](50), MinimumHosts: ptr.To[int32](2), MinimumRequests: ptr.To[int32](5),
			Interval: ptr.To[meshv1.Duration]("100ms"), BaseEjectionTime: ptr.To[meshv1.Duration]("2s"),
			MaxEjectionPercent: ptr.To[meshv1.Percentage](50),
		}})
		start := time.Now()
		if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
			if got := m.share(ctx, 9080, 50); got["v2"] != 50 {
				return fmt.Errorf("calls went %v", got)
			}
			return nil
		}); err != nil {
			t.Fatalf("the failing backend was never ejected: %v", err)
		}
		rep := m.agrees(t, 9080, "policy", map[string]int{"v2": 50}, 0)
		if od := rep.Outbound.Clusters[0].Config.GetOutlierDetection(); od.GetFailurePercentageThreshold().GetValue() != 50 || od.GetInterval().AsDuration() != 100*time.Millisecond {
			t.Errorf("weft trace shows outlier detection %v; grpc-go ejected the failing backend", od)
		}
		took := time.Since(start)
		t.Logf("ejected within %v", took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("ejection took %v with a 100 ms interval", took)
		}
		bad.FailEvery.Store(0)
		if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
			if got := m.share(ctx, 9080, 20); got["v1"] == 0 {
				return fmt.Errorf("calls went %v", got)
			}
			return nil
		}); err != nil {
			t.Fatalf("the recovered backend was never taken back: %v", err)
		}
	})

	t.Run("ring hash keeps a header value on one backend", func(t *testing.T) {
		m.policy(t, "policy", meshv1.TrafficPolicySpec{LoadBalancer: &meshv1.LoadBalancer{
			Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Header: "x-user"}}})
		as := func(user string) context.Context { return metadata.AppendToOutgoingContext(ctx, "x-user", user) }
		seen := map[string]bool{}
		for i := range 50 {
			for b := range m.share(as(fmt.Sprintf("user-%d", i)), 9080, 1) {
				seen[b] = true
			}
		}
		if !seen["v1"] || !seen["v2"] {
			t.Errorf("50 users reached only %v", seen)
		}
		reached := map[string]int{}
		for b := range seen {
			reached[b]++
		}
		rep := m.agrees(t, 9080, "policy", reached, 0, "x-user=alice")
		if h := rep.Outbound.Action.GetHashPolicy(); len(h) != 1 || h[0].GetHeader().GetHeaderName() != "x-user" ||
			rep.Outbound.Clusters[0].Config.GetLbPolicy().String() != "RING_HASH" {
			t.Errorf("weft trace shows hashing %v over %v, want a ring hash on x-user", h, rep.Outbound.Clusters[0].Config.GetLbPolicy())
		}
		for _, user := range []string{"alice", "bob", "carol"} {
			if got := m.share(as(user), 9080, 1000); len(got) != 1 {
				t.Errorf("user %s's 1,000 calls went %v, want one backend", user, got)
			}
		}
	})

	t.Run("least request prefers the idle backend", func(t *testing.T) {
		slow, fast := m.backends["v1"][9080], m.backends["v2"][9080]
		slow.Delay.Store(int64(50 * time.Millisecond))
		t.Cleanup(m.reset)
		// The slow backend's share of what eight callers send in 1.5 s.
		slowShare := func(algorithm meshv1.LoadBalancerAlgorithm) float64 {
			m.policy(t, "policy", meshv1.TrafficPolicySpec{LoadBalancer: &meshv1.LoadBalancer{Algorithm: algorithm}})
			slow0, fast0 := slow.Served.Load(), fast.Served.Load()
			deadline := time.Now().Add(1500 * time.Millisecond)
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					for time.Now().Before(deadline) {
						if _, err := m.clients[9080].Call(ctx); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			s, f := slow.Served.Load()-slow0, fast.Served.Load()-fast0
			rep := m.agrees(t, 9080, "policy", map[string]int{"v1": int(s), "v2": int(f)}, 0)
			want := map[meshv1.LoadBalancerAlgorithm]string{meshv1.LoadBalancerRoundRobin: "ROUND_ROBIN", meshv1.LoadBalancerLeastRequest: "LEAST_REQUEST"}[algorithm]
			if lb := rep.Outbound.Clusters[0].Config.GetLbPolicy().String(); lb != want {
				t.Errorf("weft trace shows load balancing %s, want %s", lb, want)
			}
			share := pct(int(s), int(s+f))
			t.Logf("%s: the slow backend got %d of %d calls (%.1f%%)", algorithm, s, s+f, share)
			return share
		}
		rr := slowShare(meshv1.LoadBalancerRoundRobin)
		lr := slowShare(meshv1.LoadBalancerLeastRequest)
		if rr < 40 {
			t.Errorf("round robin sent the slow backend %.1f%%, want about half", rr)
		}
		// grpc-go samples two endpoints with replacement, so the busy one
		// is still picked when both samples fall on it.
		if lr > 0.7*rr {
			t.Errorf("least request sent the slow backend %.1f%% against round robin's %.1f%%, want clearly fewer", lr, rr)
		}
	})
}
