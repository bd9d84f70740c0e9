package cache_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func inbound(port uint32) *listenerv3.Listener {
	return &listenerv3.Listener{Name: "weft-inbound", StatPrefix: fmt.Sprintf("inbound-%d", port)}
}

// TestSetsOnTheWire: proxies assigned a shared set and a set of their own
// each get their own resource under a name they share (two sidecars'
// inbound listeners differ), a change to the shared set reaches every
// proxy assigned to it and no other, and a change to one proxy's own set
// reaches that proxy alone.
func TestSetsOnTheWire(t *testing.T) {
	c := cache.New()
	shared := translated(t, "p", xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080)).ByType()
	if err := c.SetResources("shared", shared); err != nil {
		t.Fatal(err)
	}
	if err := c.SetResources("other", map[string][]types.Resource{resource.EndpointType: nil}); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"a", "b"} {
		if err := c.SetResources(cache.ProxySet(id), map[string][]types.Resource{resource.ListenerType: {inbound(uint32(i))}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Assign(id, "shared", cache.ProxySet(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Assign("c", "other"); err != nil {
		t.Fatal(err)
	}
	ads := xdstest.ServeADS(t, c, nil)
	clients := map[string]*deltaClient{}
	for _, id := range []string{"a", "b"} {
		clients[id] = newDeltaClient(t, ads, id, resource.ListenerType)
		resp := clients[id].next(t, 10*time.Second)
		got := map[string]*listenerv3.Listener{}
		for _, r := range resp.GetResources() {
			l := &listenerv3.Listener{}
			if err := r.GetResource().UnmarshalTo(l); err != nil {
				t.Fatal(err)
			}
			got[l.Name] = l
		}
		want := inbound(uint32(map[string]int{"a": 0, "b": 1}[id]))
		if !proto.Equal(got["weft-inbound"], want) {
			t.Errorf("%s got inbound listener %v, want its own %v", id, got["weft-inbound"], want)
		}
		if len(got) != len(shared[resource.ListenerType])+1 {
			t.Errorf("%s got %d listeners, want the shared ones and its own", id, len(got))
		}
	}
	eds := map[string]*deltaClient{}
	for _, id := range []string{"a", "b", "c"} {
		eds[id] = newDeltaClient(t, ads, id, resource.EndpointType)
		r := eds[id].next(t, 10*time.Second)
		if r == nil {
			t.Fatalf("%s got no first response", id)
		}
		// A first response is sent even when it is empty, so that a
		// client waiting for its initial configuration moves on.
		if got := len(r.GetResources()); (id == "c") != (got == 0) {
			t.Fatalf("%s's first response holds %d endpoint resources", id, got)
		}
	}

	// One more endpoint in the shared set: a and b get the changed
	// endpoint resources, c nothing.
	next := translated(t, "p", xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v1b", "v1", "10.1.0.2", 9080)).ByType()
	if err := c.SetResources("shared", next); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		r := eds[id].next(t, 10*time.Second)
		if got := names(r); len(got) != 2 {
			t.Errorf("%s got %v after one endpoint came, want the two changed resources", id, got)
		}
	}
	if r := eds["c"].next(t, time.Second); r != nil {
		t.Errorf("c, not assigned the shared set, was sent %v", names(r))
	}

	// b's own listener changes: b gets it, a nothing.
	changed := inbound(7)
	if err := c.SetResources(cache.ProxySet("b"), map[string][]types.Resource{resource.ListenerType: {changed}}); err != nil {
		t.Fatal(err)
	}
	if r := clients["b"].next(t, 10*time.Second); !slices.Equal(names(r), []string{"weft-inbound"}) {
		t.Errorf("b got %v, want its inbound listener alone", names(r))
	}
	if r := clients["a"].next(t, time.Second); r != nil {
		t.Errorf("a was sent %v after b's own listener changed", names(r))
	}
	// Versions differ between a and b, and are what they must ACK.
	if va, vb := c.Versions("a")[resource.ListenerType], c.Versions("b")[resource.ListenerType]; va == "" || va == vb {
		t.Errorf("listener versions of a and b: %q and %q", va, vb)
	}
}
