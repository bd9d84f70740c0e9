package cache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// heldAs says whether what the cache says a proxy holds of a type is
// exactly a response: the same version and the same resources, by name and
// bytes, in order.
func heldAs(t *testing.T, h cache.Held, resp *discovery.DiscoveryResponse) bool {
	t.Helper()
	if h.Version != resp.GetVersionInfo() || h.Sent != resp.GetVersionInfo() || len(h.Resources) != len(resp.GetResources()) {
		t.Logf("%s: held version %q (sent %q) with %d resources; the response was version %q with %d", h.TypeURL, h.Version, h.Sent,
			len(h.Resources), resp.GetVersionInfo(), len(resp.GetResources()))
		return false
	}
	for i, r := range h.Resources {
		if !proto.Equal(r.Any, resp.GetResources()[i]) {
			t.Logf("%s: resource %d (%s) differs from the one sent", h.TypeURL, i, r.Name)
			return false
		}
	}
	return true
}

// TestHeldIsWhatWasSent: on a state-of-the-world stream, Held returns the
// very resources and version of the last response of each type; while a
// change waits for the proxy's answer it still returns what was sent, and
// says which version is current. On a delta stream, the resources the
// stream subscribes to.
func TestHeldIsWhatWasSent(t *testing.T) {
	c := cache.New()
	base := []xdstest.Backend{xdstest.Ready("reviews-v1", "v1", "127.0.0.2", 9001), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", 9002)}
	if err := c.SetProxy("client-1", translated(t, "client-1", base...).ByType()); err != nil {
		t.Fatal(err)
	}
	ads := xdstest.ServeADS(t, c, nil)
	types := []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType}
	rec := xdstest.NewRecorder(t, ads, "client-1", nil, types...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	allAcked := func(_, acked map[string]*discovery.DiscoveryResponse) bool { return len(acked) == len(types) }
	if err := rec.Wait(ctx, allAcked); err != nil {
		t.Fatal(err)
	}
	_, acked := rec.Responses()
	held := c.Held("client-1")
	if got := len(held); got != len(types) {
		t.Fatalf("Held lists %d types, want %d", got, len(types))
	}
	for _, h := range held {
		if !heldAs(t, h, acked[h.TypeURL]) || h.Current != h.Sent {
			t.Errorf("%s: Held is not what the client was sent and acknowledged", h.TypeURL)
		}
	}

	// The client stops answering; an endpoint change is sent, then one
	// more waits for its answer.
	rec.Acking.Store(false)
	moved := append(slices.Clone(base), xdstest.Ready("reviews-v1b", "v1", "127.0.0.4", 9003))
	if err := c.SetProxy("client-1", translated(t, "client-1", moved...).ByType()); err != nil {
		t.Fatal(err)
	}
	if err := rec.Wait(ctx, func(received, acked map[string]*discovery.DiscoveryResponse) bool {
		return received[resource.EndpointType].GetVersionInfo() != acked[resource.EndpointType].GetVersionInfo()
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetProxy("client-1", translated(t, "client-1", base...).ByType()); err != nil {
		t.Fatal(err)
	}
	received, _ := rec.Responses()
	for _, h := range c.Held("client-1") {
		if h.TypeURL != resource.EndpointType {
			continue
		}
		if !heldAs(t, h, received[resource.EndpointType]) {
			t.Error("the endpoints Held are not the last ones sent")
		}
		if h.Current == h.Sent {
			t.Errorf("the change waiting for the client's answer is not current: sent %q, current %q", h.Sent, h.Current)
		}
	}

	// Delta: a stream subscribed to one cluster's endpoints holds those.
	const v1 = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
	if err := c.SetProxy("client-2", translated(t, "client-2", base...).ByType()); err != nil {
		t.Fatal(err)
	}
	d := newDeltaClient(t, ads, "client-2", resource.EndpointType, v1)
	first := d.next(t, 10*time.Second)
	if first == nil {
		t.Fatal("the delta stream got nothing")
	}
	held = c.Held("client-2")
	if len(held) != 1 || len(held[0].Resources) != 1 || held[0].Resources[0].Name != v1 ||
		!proto.Equal(held[0].Resources[0].Any, first.GetResources()[0].GetResource()) || held[0].Version != first.GetSystemVersionInfo() {
		t.Errorf("Held for a delta stream subscribed to %s: %+v; it was sent %v", v1, held, first)
	}
}
