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
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// stepClient is a delta client driven one message at a time.
type stepClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	got    chan *discovery.DeltaDiscoveryResponse
	err    chan error
}

func newStepClient(t *testing.T, ads string) *stepClient {
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
	c := &stepClient{t: t, stream: stream, got: make(chan *discovery.DeltaDiscoveryResponse, 64), err: make(chan error, 1)}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				c.err <- err
				return
			}
			c.got <- r
		}
	}()
	return c
}

func (c *stepClient) send(req *discovery.DeltaDiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

func (c *stepClient) next(wait time.Duration) *discovery.DeltaDiscoveryResponse {
	select {
	case r := <-c.got:
		return r
	case <-time.After(wait):
		return nil
	}
}

func (c *stepClient) ack(r *discovery.DeltaDiscoveryResponse) {
	c.t.Helper()
	c.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func cla(name string, endpoints int) *endpointv3.ClusterLoadAssignment {
	c := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for range endpoints {
		c.Endpoints = append(c.Endpoints, &endpointv3.LocalityLbEndpoints{})
	}
	return c
}

func clas(xs ...*endpointv3.ClusterLoadAssignment) map[string][]types.Resource {
	out := []types.Resource{}
	for _, x := range xs {
		out = append(out, x)
	}
	return map[string][]types.Resource{resource.EndpointType: out}
}

func setEDS(t *testing.T, c *cache.Cache, id string, xs ...*endpointv3.ClusterLoadAssignment) {
	t.Helper()
	if err := c.SetProxy(id, clas(xs...)); err != nil {
		t.Fatal(err)
	}
}

// A client that reconnects saying what it holds is sent only what differs,
// and told of what it holds that is gone.
func TestDeltaReconnectWithWhatItHolds(t *testing.T) {
	c := cache.New()
	setEDS(t, c, "p", cla("a", 1), cla("b", 1), cla("c", 1))
	ads := xdstest.ServeADS(t, c, nil)
	first := newStepClient(t, ads)
	first.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType})
	r := first.next(10 * time.Second)
	held := map[string]string{}
	for _, res := range r.GetResources() {
		held[res.Name] = res.Version
	}
	held["old"] = "1"
	setEDS(t, c, "p", cla("a", 1), cla("b", 2), cla("c", 1))

	again := newStepClient(t, ads)
	again.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType, InitialResourceVersions: held})
	r = again.next(10 * time.Second)
	if got := names(r); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after reconnecting the client got %v, want only the changed b", got)
	}
	if !slices.Equal(r.GetRemovedResources(), []string{"old"}) {
		t.Errorf("removed %v, want the gone one", r.GetRemovedResources())
	}
}

// Names subscribed one by one are sent when subscribed, changes to names
// no longer subscribed are not, and a name subscribed before it exists is
// sent when it comes.
func TestDeltaExplicitSubscriptions(t *testing.T) {
	c := cache.New()
	setEDS(t, c, "p", cla("a", 1), cla("b", 1))
	cl := newStepClient(t, xdstest.ServeADS(t, c, nil))
	cl.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"a", "later"}})
	r := cl.next(10 * time.Second)
	if got := names(r); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("first response %v, want a", got)
	}
	cl.ack(r)
	cl.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{"b"}, ResourceNamesUnsubscribe: []string{"a"}})
	if r = cl.next(10 * time.Second); !slices.Equal(names(r), []string{"b"}) {
		t.Fatalf("subscribing b sent %v", names(r))
	}
	cl.ack(r)
	setEDS(t, c, "p", cla("a", 2), cla("b", 1))
	if r := cl.next(time.Second); r != nil {
		t.Fatalf("a change to unsubscribed a sent %v", names(r))
	}
	setEDS(t, c, "p", cla("a", 2), cla("b", 1), cla("later", 1))
	if r = cl.next(10 * time.Second); !slices.Equal(names(r), []string{"later"}) {
		t.Fatalf("the coming of subscribed later sent %v", names(r))
	}
}

// Changes made while a response is unacknowledged go out together after
// the ACK, and nothing goes out before it.
func TestDeltaChangesWaitForTheACK(t *testing.T) {
	c := cache.New()
	setEDS(t, c, "p", cla("a", 1), cla("b", 1), cla("c", 1))
	cl := newStepClient(t, xdstest.ServeADS(t, c, nil))
	cl.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType})
	r := cl.next(10 * time.Second)
	setEDS(t, c, "p", cla("a", 2), cla("b", 1), cla("c", 1))
	setEDS(t, c, "p", cla("a", 2), cla("b", 1))
	if early := cl.next(time.Second); early != nil {
		t.Fatalf("sent %v before the ACK", names(early))
	}
	cl.ack(r)
	r = cl.next(10 * time.Second)
	if !slices.Equal(names(r), []string{"a"}) || !slices.Equal(r.GetRemovedResources(), []string{"c"}) {
		t.Fatalf("after the ACK got %v and removed %v, want a and c removed", names(r), r.GetRemovedResources())
	}
}

// A stream that falls too far behind is ended, to come back with what it
// holds, rather than be sent a partial account.
func TestDeltaStreamFarBehindIsEnded(t *testing.T) {
	c := cache.New()
	setEDS(t, c, "p", cla("a", 1))
	cl := newStepClient(t, xdstest.ServeADS(t, c, nil))
	cl.send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "p"}, TypeUrl: resource.EndpointType})
	r := cl.next(10 * time.Second)
	for i := range 1100 {
		setEDS(t, c, "p", cla("a", 2+i))
	}
	cl.ack(r)
	select {
	case err := <-cl.err:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("the stream ended with %v, want Unavailable", err)
		}
	case r := <-cl.got:
		t.Fatalf("a stream 1,100 changes behind was sent %v", names(r))
	case <-time.After(10 * time.Second):
		t.Fatal("a stream 1,100 changes behind was left waiting")
	}
}
