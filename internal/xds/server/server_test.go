package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

const target = "reviews.bookinfo.svc.cluster.local:9080"

func start(t *testing.T, addr string) (*Server, context.CancelFunc) {
	t.Helper()
	s, err := New(Options{Address: addr, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, func() { cancel(); <-done }
}

// TestRestartKeepsTrafficFlowing: the control plane goes away and comes
// back on the same address; the client keeps routing with what it has
// meanwhile, then gets the same configuration from the new server.
func TestRestartKeepsTrafficFlowing(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	model := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))

	first, stopFirst := start(t, "127.0.0.1:0")
	first.OnModel(context.Background(), model)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr, err := first.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := xdstest.NewClient(t, addr, "client-1", target)
	if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}

	stop := client.Hammer(ctx)

	stopFirst()
	time.Sleep(500 * time.Millisecond)
	second, _ := start(t, addr)
	second.OnModel(context.Background(), model)
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		if p := second.Proxies(); len(p) != 1 || p[0] != "client-1" {
			return fmt.Errorf("the client has not reconnected: %v", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	sent, failed := stop()
	t.Logf("%d RPCs across the restart, %d failed", sent, failed)
	if failed != 0 {
		t.Errorf("%d of %d RPCs failed across a control-plane restart", failed, sent)
	}
}

// TestInvalidTranslationIsNotPushed: a model whose translation fails
// validation is not pushed; the proxy keeps its last good configuration.
func TestInvalidTranslationIsNotPushed(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	good := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
	s, _ := start(t, "127.0.0.1:0")
	s.OnModel(context.Background(), good)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, err := s.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := xdstest.NewClient(t, addr, "client-1", target)
	if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	before := s.cache.Marshals()

	// A header match with an empty name passes the model (admission would
	// have refused it) but not Envoy's ValidateAll.
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2))
	in.TrafficPolicies[0].Spec.HTTP[0].Matches[0].Headers[0].Name = ""
	s.OnModel(context.Background(), mesh.Build(in))
	failure := s.sched.failure("client-1")
	if failure == nil {
		t.Fatal("an invalid translation was not reported")
	}
	t.Logf("refused: %v", failure)
	if s.cache.Marshals() != before {
		t.Error("resources of an invalid translation reached the cache")
	}
	for range 100 {
		if _, err := client.Call(ctx); err != nil {
			t.Fatalf("the proxy lost its last good configuration: %v", err)
		}
	}
}

func TestProxyFor(t *testing.T) {
	envoy := &corev3.Node{Id: "reviews-v1-7d9f.bookinfo", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetaFlavour: structpb.NewStringValue("envoy")}}}
	if p := ProxyFor(envoy, wire.DeliverySDS); p.Flavour != wire.FlavourEnvoy || p.Pod != "bookinfo/reviews-v1-7d9f" || p.Namespace != "bookinfo" ||
		p.Delivery != wire.DeliverySDS || p.Variant() != translate.VariantEnvoy {
		t.Errorf("envoy node: %+v", p)
	}
	// Proxyless gRPC: the pod is named the same way (its servers get
	// Listeners at the pod's address); a node that does not say how it
	// gets its certificates takes the controller's delivery.
	if p := ProxyFor(&corev3.Node{Id: "client.shop"}, wire.DeliveryPodCertificate); p.Flavour != wire.FlavourGRPC || p.Pod != "shop/client" ||
		p.Delivery != wire.DeliveryPodCertificate || p.Variant() != translate.VariantGRPCMTLS {
		t.Errorf("a node without metadata: %+v", p)
	}
	if p := ProxyFor(&corev3.Node{Id: "tool"}, ""); p.Flavour != wire.FlavourGRPC || p.Pod != "" || p.Variant() != translate.VariantGRPC {
		t.Errorf("a node id that names no pod: %+v", p)
	}
	// The delivery the node says wins over the controller's, both ways;
	// one it does not know leaves the controller's.
	for _, c := range []struct {
		said, controller, want wire.CertDelivery
		variant                translate.Variant
	}{
		{wire.DeliverySDS, wire.DeliveryPodCertificate, wire.DeliverySDS, translate.VariantGRPC},
		{wire.DeliveryPodCertificate, wire.DeliverySDS, wire.DeliveryPodCertificate, translate.VariantGRPCMTLS},
		{"spiffeCSI", wire.DeliverySDS, wire.DeliverySDS, translate.VariantGRPC},
	} {
		node := &corev3.Node{Id: "client.shop", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			wire.MetaCertDelivery: structpb.NewStringValue(string(c.said))}}}
		if p := ProxyFor(node, c.controller); p.Delivery != c.want || p.Variant() != c.variant {
			t.Errorf("a node saying %q under a controller of %q: %+v (%s), want %q (%s)", c.said, c.controller, p, p.Variant(), c.want, c.variant)
		}
	}
}

// TestNACKIsReported: a proxy that rejects its configuration is reported
// for every resource in it, with the proxy, the type and its message; a
// later acknowledged version clears it.
func TestNACKIsReported(t *testing.T) {
	model := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080)))
	s, _ := start(t, "127.0.0.1:0")
	s.OnModel(context.Background(), model)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr, stream := sotwStream(ctx, t, s)
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "picky"}, TypeUrl: resource.ListenerType,
		ResourceNames: []string{target}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ListenerType, ResourceNames: []string{target},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Code: 3, Message: "listener refused by the test"}}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		var out bytes.Buffer
		if err := cli.Status(ctx, addr, &out); err != nil {
			return err
		}
		if !strings.Contains(out.String(), "picky") || !strings.Contains(out.String(), "Listener version") ||
			!strings.Contains(out.String(), "listener refused by the test") || !strings.Contains(out.String(), "error") {
			return fmt.Errorf("weft status does not show the NACK:\n%s", out.String())
		}
		t.Logf("weft status:\n%s", out.String())
		total, synced, rejected := s.ProxiesFor("MeshService", "bookinfo", "reviews", 1)
		if total != 1 || synced != 0 || !strings.Contains(rejected, "proxy picky rejected") || !strings.Contains(rejected, "listener refused by the test") {
			return fmt.Errorf("total %d synced %d rejected %q", total, synced, rejected)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sotwStream opens a state-of-the-world ADS stream to the server in plain
// text, closed with the test, and returns it with the server's address.
func sotwStream(ctx context.Context, t *testing.T, s *Server) (string, discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient) {
	t.Helper()
	addr, err := s.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return addr, stream
}

// TestNothingBeforeTheFirstModel: a proxy that connects to a server that
// has no model yet (a controller that just started, its caches still
// syncing) is sent nothing until the model comes, then the model's
// configuration: never an empty mesh in between, which would take away
// the configuration it kept through the restart (for a sidecar, plain
// text on every port).
func TestNothingBeforeTheFirstModel(t *testing.T) {
	s, _ := start(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stream := sotwStream(ctx, t, s)
	if err := stream.Send(&discovery.DiscoveryRequest{Node: &corev3.Node{Id: "client.bookinfo"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if p := s.Proxies(); len(p) != 1 {
			return fmt.Errorf("connected: %v", p)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.OnModel(ctx, mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", 9080))))
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range resp.GetResources() {
		l := &listenerv3.Listener{}
		if err := r.UnmarshalTo(l); err != nil {
			t.Fatal(err)
		}
		names = append(names, l.GetName())
	}
	if !slices.Contains(names, target) {
		t.Errorf("the first listeners sent were %v, want the model's %s", names, target)
	}
}
