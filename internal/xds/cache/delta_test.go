package cache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// deltaClient is a minimal delta xDS client on the generated stub (grpc-go
// has none): it subscribes to one type and reports what arrives.
type deltaClient struct {
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	got    chan *discovery.DeltaDiscoveryResponse
}

func newDeltaClient(t *testing.T, ads, node, typeURL string, names ...string) *deltaClient {
	t.Helper()
	cc, err := grpc.NewClient(ads, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: typeURL, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	d := &deltaClient{stream: stream, got: make(chan *discovery.DeltaDiscoveryResponse, 16)}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(d.got)
				return
			}
			d.got <- resp
			// ACK it.
			_ = stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResponseNonce: resp.GetNonce()})
		}
	}()
	return d
}

func (d *deltaClient) next(t *testing.T, wait time.Duration) *discovery.DeltaDiscoveryResponse {
	t.Helper()
	select {
	case r, ok := <-d.got:
		if !ok {
			t.Fatal("the delta stream ended")
		}
		return r
	case <-time.After(wait):
		return nil
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func names(r *discovery.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.GetResources() {
		out = append(out, res.GetName())
	}
	slices.Sort(out)
	return out
}

// only keeps the endpoint resources of the given clusters.
func only(all map[string][]types.Resource, clusters ...string) map[string][]types.Resource {
	out := map[string][]types.Resource{}
	for typeURL, list := range all {
		out[typeURL] = nil
		if typeURL != resource.EndpointType {
			continue
		}
		for _, r := range list {
			if slices.Contains(clusters, r.(*endpointv3.ClusterLoadAssignment).GetClusterName()) {
				out[typeURL] = append(out[typeURL], r)
			}
		}
	}
	return out
}

// TestDeltaSendsOnlyWhatChanged, on the wire: one endpoint change sends
// only the endpoint resources that changed, and only to the proxies that
// hold them; a proxy that does not hold them receives nothing.
func TestDeltaSendsOnlyWhatChanged(t *testing.T) {
	const (
		all = "outbound|9080||reviews.bookinfo.svc.cluster.local"
		sv1 = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
		sv2 = "outbound|9080|v2|reviews.bookinfo.svc.cluster.local"
	)
	base := []xdstest.Backend{xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080)}
	c := cache.New()
	set := func(backends ...xdstest.Backend) {
		t.Helper()
		r := translated(t, "p", backends...).ByType()
		if err := c.SetProxy("a", r); err != nil {
			t.Fatal(err)
		}
		// b holds only the v1 subset's endpoints.
		if err := c.SetProxy("b", only(r, sv1)); err != nil {
			t.Fatal(err)
		}
	}
	set(base...)
	ads := xdstest.ServeADS(t, c, nil)
	a := newDeltaClient(t, ads, "a", resource.EndpointType, "*")
	b := newDeltaClient(t, ads, "b", resource.EndpointType, "*")
	if got := names(a.next(t, 10*time.Second)); !slices.Equal(got, sorted(all, sv1, sv2)) {
		t.Fatalf("a's first response: %v", got)
	}
	if got := names(b.next(t, 10*time.Second)); !slices.Equal(got, sorted(sv1)) {
		t.Fatalf("b's first response: %v", got)
	}

	// A second v2 endpoint changes two resources.
	set(append(base, xdstest.Ready("reviews-v2b", "v2", "10.1.0.3", 9080))...)
	resp := a.next(t, 10*time.Second)
	if got := names(resp); !slices.Equal(got, sorted(all, sv2)) {
		t.Fatalf("after one endpoint change a got %v, want only the two changed resources", got)
	}
	if len(resp.GetRemovedResources()) != 0 {
		t.Errorf("removed %v", resp.GetRemovedResources())
	}
	if r := b.next(t, time.Second); r != nil {
		t.Errorf("b, which holds none of the changed resources, was sent %v", names(r))
	}
	if r := a.next(t, time.Second); r != nil {
		t.Errorf("a was sent something more: %v", names(r))
	}

	// The v2 endpoints go away (the subset stays defined): a gets the two
	// resources that changed, the v2 one now empty.
	set(base[0])
	resp = a.next(t, 10*time.Second)
	if got := names(resp); !slices.Equal(got, sorted(all, sv2)) {
		t.Errorf("after v2 left, a got %v", got)
	}

	// A NACK is not answered with a resend.
	if err := b.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: "1",
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "rejected by the test"}}); err != nil {
		t.Fatal(err)
	}
	if r := b.next(t, time.Second); r != nil {
		t.Errorf("a NACK was answered with %v", names(r))
	}
}
