package translate

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weftmesh/weft/internal/mesh"
)

// startBackend serves any method on addr and says who it is in a response
// header.
func startBackend(t *testing.T, addr, name string) int32 {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var in emptypb.Empty
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		if err := stream.SetHeader(metadata.Pairs("backend", name)); err != nil {
			return err
		}
		return stream.SendMsg(&emptypb.Empty{})
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return int32(lis.Addr().(*net.TCPAddr).Port)
}

// serveADS serves resources to one node from go-control-plane's snapshot
// cache (a stand-in for weft's own server, which comes next).
func serveADS(t *testing.T, node string, r *Resources) string {
	t.Helper()
	snap, err := cachev3.NewSnapshot("1", map[resource.Type][]types.Resource{
		resource.ListenerType: toRes(r.Listeners), resource.RouteType: toRes(r.Routes),
		resource.ClusterType: toRes(r.Clusters), resource.EndpointType: toRes(r.Endpoints),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Snapshot.Consistent() cannot be used here: go-control-plane looks
	// for route references only in filter chains, not in api_listener
	// listeners, and reports every proxyless route as unreferenced.
	// Translate has already run weft's own referential check
	// (Resources.Validate), which follows api_listener.
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	xs := serverv3.NewServer(context.Background(), cache, nil)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func toRes[T types.Resource](xs []T) []types.Resource {
	out := make([]types.Resource, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// TestGRPCClientRoutesByTranslatedConfig: grpc-go's own xDS client,
// configured only by weft's translated resources, reaches the service by
// name, sends x-canary requests to v2, and splits the rest 90/10 over
// 10,000 real RPCs.
func TestGRPCClientRoutesByTranslatedConfig(t *testing.T) {
	v1 := startBackend(t, "127.0.0.2:0", "v1")
	v2 := startBackend(t, "127.0.0.3:0", "v2")
	m := mesh.Build(reviewsInput(
		backend{"reviews-v1", "v1", "127.0.0.2", v1, true, false},
		backend{"reviews-v2", "v2", "127.0.0.3", v2, true, false},
	))
	r, err := Translate(m, Proxy{ID: "client-1", Namespace: "bookinfo", Flavour: FlavourGRPC})
	if err != nil {
		t.Fatal(err)
	}
	ads := serveADS(t, "client-1", r)

	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "client-1"}}`, ads)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///reviews.bookinfo.svc.cluster.local:9080",
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	call := func(ctx context.Context, opts ...grpc.CallOption) (string, error) {
		var md metadata.MD
		err := cc.Invoke(ctx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{}, append(opts, grpc.Header(&md))...)
		if len(md.Get("backend")) == 0 {
			return "", err
		}
		return md.Get("backend")[0], err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := call(ctx, grpc.WaitForReady(true)); err != nil { // waits for the config
		t.Fatalf("first RPC: %v", err)
	}

	canary := metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
	for range 200 {
		if got, err := call(canary); err != nil || got != "v2" {
			t.Fatalf("an x-canary request went to %q (%v), want v2", got, err)
		}
	}

	const n = 10000
	counts := map[string]int{}
	for range n {
		got, err := call(ctx)
		if err != nil {
			t.Fatalf("RPC failed: %v", err)
		}
		counts[got]++
	}
	share := 100 * float64(counts["v1"]) / n
	t.Logf("v1 %d, v2 %d of %d (v1 %.2f%%)", counts["v1"], counts["v2"], n, share)
	if share < 88 || share > 92 || counts["v1"]+counts["v2"] != n {
		t.Errorf("v1 got %.2f%% of the requests, want 90 ± 2", share)
	}
}
