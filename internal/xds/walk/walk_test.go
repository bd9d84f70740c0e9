package walk_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/walk"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

const (
	host      = "reviews.bookinfo.svc.cluster.local"
	target    = host + ":9080"
	clusterIP = "10.96.0.10"
)

// reviews is the reviews fixture with a cluster IP, its backends at the
// given addresses, and the policy's spec replaced by spec.
func reviews(v1, v2 string, p1, p2 int32, spec meshv1.TrafficPolicySpec) mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", v1, p1), xdstest.Ready("reviews-v2", "v2", v2, p2))
	in.Services[0].Spec.ClusterIPs = []string{clusterIP}
	spec.TargetRef = in.TrafficPolicies[0].Spec.TargetRef
	in.TrafficPolicies[0].Spec = spec
	return in
}

// byHeader routes marked calls to v2, the rest to v1, and calls to a
// method path of their own to v2.
var byHeader = meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{
	{Name: "testers", Matches: []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{Name: "x-canary", Value: ptr.To("true")}}}},
		Backends: []meshv1.WeightedBackend{{Subset: "v2", Weight: 100}}},
	{Name: "new-method", Matches: []meshv1.HTTPMatch{{Path: &meshv1.PathMatch{Type: meshv1.MatchExact, Value: "/weft.test.Reviews/New"}}},
		Backends: []meshv1.WeightedBackend{{Subset: "v2", Weight: 100}}},
	{Name: "everyone", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}},
}}

// The walk agrees with grpc-go's own routing: for each request, the walk
// through the proxyless configuration, the walk through the sidecar's,
// and a real call by grpc-go's xDS client reach the same backend.
func TestWalkAgreesWithGRPC(t *testing.T) {
	p1 := xdstest.StartBackend(t, "127.0.0.2:0", "reviews-v1")
	p2 := xdstest.StartBackend(t, "127.0.0.3:0", "reviews-v2")
	model := mesh.Build(reviews("127.0.0.2", "127.0.0.3", p1, p2, byHeader))
	sh, err := translate.BuildShared(model, nil, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	grpcWalk, envoyWalk := walk.New(sh.GRPC), walk.New(sh.Envoy)
	backend := map[string]string{net.JoinHostPort("127.0.0.2", fmt.Sprint(p1)): "reviews-v1", net.JoinHostPort("127.0.0.3", fmt.Sprint(p2)): "reviews-v2"}

	_, addr, ctx := serve(t, server.Options{}, model)
	client := xdstest.NewClient(t, addr, "client-1", target)

	for _, c := range []struct {
		name    string
		method  string
		headers map[string]string
		want    string
	}{
		{"unmarked", "/weft.test.Reviews/Get", nil, "reviews-v1"},
		{"marked", "/weft.test.Reviews/Get", map[string]string{"x-canary": "true"}, "reviews-v2"},
		{"marked otherwise", "/weft.test.Reviews/Get", map[string]string{"x-canary": "false"}, "reviews-v1"},
		{"new method", "/weft.test.Reviews/New", nil, "reviews-v2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target,
				Method: "POST", Path: c.method, Headers: c.headers}
			var walked []string
			for flavour, w := range map[wire.Flavour]func(walk.Request) (*walk.Result, error){wire.FlavourGRPC: grpcWalk.Proxyless, wire.FlavourEnvoy: envoyWalk.Sidecar} {
				res, err := w(req)
				if err != nil {
					t.Fatalf("%s walk: %v", flavour, err)
				}
				if len(res.Clusters) != 1 || len(res.Clusters[0].Endpoints) != 1 {
					t.Fatalf("%s walk: clusters %+v, want one with one endpoint", flavour, res.Clusters)
				}
				walked = append(walked, backend[res.Clusters[0].Endpoints[0]])
			}
			md := metadata.MD{}
			for k, v := range c.headers {
				md.Set(k, v)
			}
			var hdr metadata.MD
			err := client.Invoke(metadata.NewOutgoingContext(ctx, md), c.method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true), grpc.Header(&hdr))
			if err != nil {
				t.Fatal(err)
			}
			called := first(hdr.Get("backend"))
			if walked[0] != c.want || walked[1] != c.want || called != c.want {
				t.Errorf("walks reached %v, grpc-go reached %q; want %s", walked, called, c.want)
			}
		})
	}
}

// The walk shows what only a sidecar acts on: the mirror, the cookie hash,
// the per-try timeout, the fault, the cluster's algorithm, limits and
// outlier settings, the serving side's rate limit, and Random.
func TestWalkShowsSidecarOnlyFeatures(t *testing.T) {
	spec := meshv1.TrafficPolicySpec{
		HTTP: []meshv1.HTTPRoute{{Name: "shadowed", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}},
			Mirror: &meshv1.Mirror{Name: "reviews", Subset: "v2", Percentage: ptr.To[meshv1.Percentage](10)},
			Fault:  &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](503), Percentage: 5}}}},
		Retries:          &meshv1.RetryPolicy{PerTryTimeout: ptr.To[meshv1.Duration]("1s")},
		ConnectionPool:   &meshv1.ConnectionPool{MaxConnections: ptr.To[int32](7)},
		OutlierDetection: &meshv1.OutlierDetection{Consecutive5xxErrors: ptr.To[int32](3)},
		LoadBalancer:     &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRingHash, RingHash: &meshv1.RingHash{Cookie: &meshv1.HashCookie{Name: "session"}}},
	}
	sh, err := translate.BuildShared(mesh.Build(reviews("10.1.0.1", "10.1.0.2", 9080, 9080, spec)), nil, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := walk.New(sh.Envoy).Sidecar(walk.Request{DestinationIP: clusterIP, DestinationPort: 9080, Authority: "reviews.bookinfo:9080", Method: "GET", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	a := res.Action
	if res.Route != "shadowed" || len(a.GetRequestMirrorPolicies()) != 1 ||
		a.GetRequestMirrorPolicies()[0].GetCluster() != "outbound|9080|v2|"+host {
		t.Errorf("route %q mirrors %v, want shadowed mirroring to v2", res.Route, a.GetRequestMirrorPolicies())
	}
	if len(a.GetHashPolicy()) != 1 || a.GetHashPolicy()[0].GetCookie().GetName() != "session" {
		t.Errorf("hash policy %v, want the session cookie", a.GetHashPolicy())
	}
	if a.GetRetryPolicy().GetPerTryTimeout().AsDuration() != time.Second {
		t.Errorf("retry policy %v, want a 1 s per-try timeout", a.GetRetryPolicy())
	}
	if res.Fault.GetAbort().GetHttpStatus() != 503 || res.Fault.GetAbort().GetPercentage().GetNumerator() != 5 {
		t.Errorf("fault %v, want 503 on 5%%", res.Fault)
	}
	if got := res.Names(); !slices.Equal(got, []string{"outbound|9080|v1|" + host}) {
		t.Fatalf("clusters %v", got)
	}
	c := res.Clusters[0].Config
	if c.GetLbPolicy() != clusterv3.Cluster_RING_HASH || c.GetCircuitBreakers().GetThresholds()[0].GetMaxConnections().GetValue() != 7 ||
		c.GetOutlierDetection().GetConsecutive_5Xx().GetValue() != 3 {
		t.Errorf("cluster %s: lb %v, breakers %v, outlier %v", c.GetName(), c.GetLbPolicy(), c.GetCircuitBreakers(), c.GetOutlierDetection())
	}
	if got := res.Clusters[0].Endpoints; !slices.Equal(got, []string{"10.1.0.1:9080"}) {
		t.Errorf("endpoints %v, want v1's", got)
	}

	// A destination no service owns takes the passthrough chain.
	res, err = walk.New(sh.Envoy).Sidecar(walk.Request{DestinationIP: "192.0.2.1", DestinationPort: 443})
	if err != nil || !res.TCP || res.Clusters[0].Name != translate.PassthroughCluster {
		t.Errorf("an unknown destination: %+v, %v; want the passthrough TCP proxy", res, err)
	}

	// A rate limit is in the serving sidecar's inbound chain; Random goes
	// to sidecars as it is and to proxyless clients as round robin.
	spec = meshv1.TrafficPolicySpec{RateLimit: &meshv1.LocalRateLimit{Requests: 50, Interval: "1s", Burst: ptr.To[int32](80)},
		LoadBalancer: &meshv1.LoadBalancer{Algorithm: meshv1.LoadBalancerRandom}}
	sh, sidecar := reviewsSidecar(t, mesh.Build(reviews("10.1.0.1", "10.1.0.2", 9080, 9080, spec)), translate.Options{})
	in, err := sidecar.SidecarInbound(9080, walk.Caller{}, walk.Request{Method: "POST", Path: "/weft.test.Reviews/Get", Authority: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if b := in.RateLimit.GetTokenBucket(); !in.Allowed || b.GetMaxTokens() != 80 || b.GetTokensPerFill().GetValue() != 50 || b.GetFillInterval().AsDuration() != time.Second {
		t.Errorf("inbound: allowed %v, rate limit %v; want a bucket of 80 filled with 50 a second", in.Allowed, in.RateLimit)
	}
	req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target, Method: "POST", Path: "/weft.test.Reviews/Get"}
	envoyRes, err := walk.New(sh.Envoy).Sidecar(req)
	if err != nil {
		t.Fatal(err)
	}
	grpcRes, err := walk.New(sh.GRPC).Proxyless(req)
	if err != nil {
		t.Fatal(err)
	}
	if e, g := envoyRes.Clusters[0].Config.GetLbPolicy(), grpcRes.Clusters[0].Config.GetLbPolicy(); e != clusterv3.Cluster_RANDOM || g != clusterv3.Cluster_ROUND_ROBIN {
		t.Errorf("Random: sidecars get %v, proxyless clients %v; want RANDOM and ROUND_ROBIN", e, g)
	}
}

// With a locality preference the walk shows the caller's zone first and
// the other zone as failover, for both flavours, and grpc-go's real calls
// from a pod in that zone reach only its zone's backend.
func TestWalkAgreesWithGRPCOnLocality(t *testing.T) {
	pa := xdstest.StartBackend(t, "127.0.0.2:0", "reviews-v1")
	pb := xdstest.StartBackend(t, "127.0.0.3:0", "reviews-v2")
	in := reviews("127.0.0.2", "127.0.0.3", pa, pb, meshv1.TrafficPolicySpec{Locality: &meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}})
	for i, zone := range []string{"a", "b"} {
		in.Nodes = append(in.Nodes, metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: "node-" + zone,
			Labels: map[string]string{corev1.LabelTopologyZone: "zone-" + zone}}})
		in.Pods[i].Spec.NodeName = "node-" + zone
	}
	in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "client-1"}, Spec: corev1.PodSpec{NodeName: "node-a"}})
	model := mesh.Build(in)
	sh, err := translate.BuildShared(model, nil, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := sh.LocalityOf("bookinfo/client-1")
	zoneA, zoneB := net.JoinHostPort("127.0.0.2", fmt.Sprint(pa)), net.JoinHostPort("127.0.0.3", fmt.Sprint(pb))
	req := walk.Request{Target: target, DestinationIP: clusterIP, DestinationPort: 9080, Authority: target, Method: "POST", Path: "/weft.test.Reviews/Get"}
	for _, f := range []wire.Flavour{wire.FlavourGRPC, wire.FlavourEnvoy} {
		local, err := sh.Local(f, at, model.Everything())
		if err != nil {
			t.Fatal(err)
		}
		base, walkOf := sh.GRPC, (*walk.Walker).Proxyless
		if f == wire.FlavourEnvoy {
			base, walkOf = sh.Envoy, (*walk.Walker).Sidecar
		}
		res, err := walkOf(walk.New(base, local), req)
		if err != nil {
			t.Fatalf("%s walk: %v", f, err)
		}
		if len(res.Clusters) != 1 || !slices.Equal(res.Clusters[0].Endpoints, []string{zoneA}) ||
			len(res.Clusters[0].Failover) != 1 || !slices.Equal(res.Clusters[0].Failover[0], []string{zoneB}) {
			t.Errorf("%s walk: clusters %+v, want %s first and %s as failover", f, res.Clusters, zoneA, zoneB)
		}
	}

	_, addr, ctx := serve(t, server.Options{}, model)
	client := xdstest.NewClient(t, addr, wire.NodeID("client-1", "bookinfo"), target)
	got := map[string]int{}
	for range 200 {
		b, err := client.Call(ctx, grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		got[b]++
	}
	if got["reviews-v1"] != 200 {
		t.Errorf("grpc-go's calls from zone-a went %v, want all to zone-a's backend", got)
	}
}

// serve starts weft's xDS server on loopback with opts, gives it model
// (when not nil), and returns it, its address and a context that bounds
// the test.
func serve(t *testing.T, opts server.Options, model *mesh.Model) (*server.Server, string, context.Context) {
	t.Helper()
	opts.Address, opts.Log = "127.0.0.1:0", logr.Discard()
	s, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if model != nil {
		s.OnModel(ctx, model)
	}
	addr, err := s.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, addr, ctx
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
