package cache_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

var traceXDS = os.Getenv("WEFT_TRACE_XDS") != ""

const target = "reviews.bookinfo.svc.cluster.local:9080"

func translated(t *testing.T, node string, backends ...xdstest.Backend) *translate.Resources {
	t.Helper()
	sh, err := translate.BuildShared(mesh.Build(xdstest.ReviewsInput(backends...)), nil, translate.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := sh.GRPC // a proxyless client serving nothing has the shared set alone
	return r
}

// TestRoutingThroughTheCache: grpc-go's xDS client, fed by weft's cache,
// reaches the service by name, routes x-canary to v2, splits the rest
// 90/10 over 10,000 RPCs, follows endpoints scaling up, and loses no RPC
// while an endpoint drains away.
func TestRoutingThroughTheCache(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	c := cache.New()
	base := []xdstest.Backend{xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)}
	if err := c.SetProxy("client-1", translated(t, "client-1", base...).ByType()); err != nil {
		t.Fatal(err)
	}
	client := xdstest.NewClient(t, xdstest.ServeADS(t, c, nil), "client-1", target)
	// Room for 10,000 RPCs on a slow machine and the two 30 s waits below.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("first RPC: %v", err)
	}
	canary := metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
	for range 200 {
		if got, err := client.Call(canary); err != nil || got != "v2" {
			t.Fatalf("an x-canary request went to %q (%v), want v2", got, err)
		}
	}
	const n = 10000
	counts := map[string]int{}
	for range n {
		got, err := client.Call(ctx)
		if err != nil {
			t.Fatal(err)
		}
		counts[got]++
	}
	share := 100 * float64(counts["v1"]) / n
	t.Logf("v1 %d, v2 %d of %d (v1 %.2f%%)", counts["v1"], counts["v2"], n, share)
	if share < 88 || share > 92 {
		t.Errorf("v1 got %.2f%% of the requests, want 90 ± 2", share)
	}

	// Scale v1 up: a second v1 endpoint starts taking traffic.
	v1b := xdstest.StartBackend(t, "127.0.0.4:0", "v1b")
	up := append(base, xdstest.Ready("reviews-v1b", "v1", "127.0.0.4", v1b))
	if err := c.SetProxy("client-1", translated(t, "client-1", up...).ByType()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		if got, err := client.Call(ctx); err != nil || got != "v1b" {
			return fmt.Errorf("went to %q (%v)", got, err)
		}
		return nil
	}); err != nil {
		t.Fatalf("the new endpoint never got traffic: %v", err)
	}
	t.Logf("the new endpoint took traffic after %v", time.Since(start))

	// Drain it: while it leaves, RPCs run without pause and none fails.
	stop := client.Hammer(ctx)
	time.Sleep(100 * time.Millisecond)
	down := append(base, xdstest.Draining("reviews-v1b", "v1", "127.0.0.4", v1b))
	if err := c.SetProxy("client-1", translated(t, "client-1", down...).ByType()); err != nil {
		t.Fatal(err)
	}
	// The hammer runs until the client has taken the draining endpoint
	// out: 200 RPCs in a row that do not reach it.
	drained := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		for i := range 200 {
			got, err := client.Call(ctx)
			if err != nil {
				return fmt.Errorf("RPC %d of 200: %v", i, err)
			}
			if got == "v1b" {
				return fmt.Errorf("RPC %d of 200 still went to the draining endpoint", i)
			}
		}
		return nil
	})
	if sent, failed := stop(); failed != 0 {
		t.Errorf("%d of %d RPCs failed while an endpoint drained", failed, sent)
	}
	if drained != nil {
		t.Fatalf("the client did not stop sending to the draining endpoint: %v", drained)
	}
	for range 500 {
		if got, _ := client.Call(ctx); got == "v1b" {
			t.Fatal("a draining endpoint still gets new RPCs")
		}
	}
}

// responses counts what the server sends, per node and type, and the NACKs
// it receives.
type responses struct {
	mu    sync.Mutex
	sent  map[string]int
	nacks map[string]int
	acked map[string]string
}

func newResponses() *responses {
	return &responses{sent: map[string]int{}, nacks: map[string]int{}, acked: map[string]string{}}
}

func (r *responses) callbacks() serverv3.Callbacks {
	nodes := map[int64]string{}
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			if req.GetNode().GetId() != "" {
				nodes[id] = req.GetNode().GetId()
			}
			if traceXDS {
				fmt.Printf("REQ  %s v=%q nonce=%q names=%v err=%v\n", req.GetTypeUrl()[len(req.GetTypeUrl())-20:], req.GetVersionInfo(), req.GetResponseNonce(), req.GetResourceNames(), req.GetErrorDetail().GetMessage() != "")
			}
			switch {
			case req.GetErrorDetail() != nil:
				r.nacks[req.GetTypeUrl()]++
			case req.GetResponseNonce() != "":
				r.acked[req.GetTypeUrl()] = req.GetVersionInfo()
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sent[resp.GetTypeUrl()]++
			if traceXDS {
				fmt.Printf("RESP %s v=%q nonce=%q n=%d\n", resp.GetTypeUrl()[len(resp.GetTypeUrl())-20:], resp.GetVersionInfo(), resp.GetNonce(), len(resp.GetResources()))
			}
		},
	}
}

func (r *responses) get(typeURL string) (sent, nacks int, acked string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[typeURL], r.nacks[typeURL], r.acked[typeURL]
}

// TestNACKIsNotResentInALoop: grpc-go rejects a route with num_retries 0.
// After the NACK the cache sends that proxy nothing until its
// configuration changes, and the next good version is accepted.
func TestNACKIsNotResentInALoop(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	backends := []xdstest.Backend{xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)}
	good := translated(t, "nacker", backends...)
	bad := translated(t, "nacker", backends...)
	for _, rc := range bad.Routes {
		rc.VirtualHosts[0].RetryPolicy = &routev3.RetryPolicy{RetryOn: "unavailable", NumRetries: wrapperspb.UInt32(0)}
	}
	c := cache.New()
	if err := c.SetProxy("nacker", bad.ByType()); err != nil {
		t.Fatal(err)
	}
	seen := newResponses()
	client := xdstest.NewClient(t, xdstest.ServeADS(t, c, seen.callbacks()), "nacker", target)
	// Room for the waits below: 20 s, 2 s and two of 30 s.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() { _, _ = client.Call(ctx, grpc.WaitForReady(true)) }() // makes the channel ask for its config

	if err := testenv.Eventually(ctx, 20*time.Second, func(context.Context) error {
		if _, nacks, _ := seen.get(resource.RouteType); nacks == 0 {
			return fmt.Errorf("no NACK yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sentAtNack, _, _ := seen.get(resource.RouteType)
	time.Sleep(2 * time.Second)
	sentLater, nacks, _ := seen.get(resource.RouteType)
	if sentLater != sentAtNack || nacks != 1 {
		t.Fatalf("after the NACK the server sent %d more route responses and got %d NACKs: a resend loop", sentLater-sentAtNack, nacks)
	}

	if err := c.SetProxy("nacker", good.ByType()); err != nil {
		t.Fatal(err)
	}
	// grpc-go subscribes to clusters only once it accepts a route
	// configuration, so the first RPCs may race them.
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		_, err := client.Call(ctx, grpc.WaitForReady(true))
		return err
	}); err != nil {
		t.Fatalf("the fixed configuration did not work: %v", err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if _, _, acked := seen.get(resource.RouteType); acked == "" {
			return fmt.Errorf("the fixed routes were not acknowledged")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestEachResourceIsMarshaledOnce: 50 proxies with the same resources cost
// one serialization per distinct resource, and an endpoint change costs
// one per changed resource, whatever the number of proxies. Clients on
// three of the proxies get the bytes and route by them.
func TestEachResourceIsMarshaledOnce(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	backends := []xdstest.Backend{xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)}
	r := translated(t, "p", backends...)
	distinct := len(r.Listeners) + len(r.Routes) + len(r.Clusters) + len(r.Endpoints)
	c := cache.New()
	for i := range 50 {
		if err := c.SetProxy(fmt.Sprintf("proxy-%d", i), translated(t, "p", backends...).ByType()); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Marshals(); got != int64(distinct) {
		t.Fatalf("50 proxies cost %d serializations for %d distinct resources", got, distinct)
	}
	ads := xdstest.ServeADS(t, c, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		cl := xdstest.NewClient(t, ads, fmt.Sprintf("proxy-%d", i), target)
		if _, err := cl.Call(ctx, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("proxy-%d: %v", i, err)
		}
	}
	if got := c.Marshals(); got != int64(distinct) {
		t.Fatalf("serving 3 streams cost %d more serializations", got-int64(distinct))
	}

	// One more v2 endpoint changes two endpoint resources (all endpoints,
	// and subset v2), for every proxy.
	v2b := xdstest.StartBackend(t, "127.0.0.5:0", "v2b")
	more := append(backends, xdstest.Ready("reviews-v2b", "v2", "127.0.0.5", v2b))
	before := c.Marshals()
	changed := 0
	next := translated(t, "p", more...)
	for i, cla := range next.Endpoints {
		if !proto.Equal(cla, r.Endpoints[i]) {
			changed++
		}
	}
	for i := range 50 {
		if err := c.SetProxy(fmt.Sprintf("proxy-%d", i), translated(t, "p", more...).ByType()); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.Marshals() - before; got != int64(changed) || changed != 2 {
		t.Fatalf("a change of %d resources for 50 proxies cost %d serializations", changed, got)
	}
}

// TestEmptiedTypeIsSent: when a proxy's last resource of a type goes, it is
// sent an empty response for that type (grpc-go then fails RPCs to the
// removed service fast), not left waiting.
func TestEmptiedTypeIsSent(t *testing.T) {
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	c := cache.New()
	full := translated(t, "p", xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2))
	if err := c.SetProxy("p", full.ByType()); err != nil {
		t.Fatal(err)
	}
	client := xdstest.NewClient(t, xdstest.ServeADS(t, c, nil), "p", target)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetProxy("p", (&translate.Resources{}).ByType()); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := client.Call(callCtx); status.Code(err) != codes.Unavailable {
			return fmt.Errorf("got %v", err)
		}
		return nil
	}); err != nil {
		t.Fatalf("RPCs to a removed service do not fail with UNAVAILABLE: %v", err)
	}
}

// TestEntriesGoWhenNoProxyHoldsThem: resources are kept while any proxy
// holds them, and dropped when the last one lets go.
func TestEntriesGoWhenNoProxyHoldsThem(t *testing.T) {
	r := translated(t, "p", xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080))
	distinct := len(r.Listeners) + len(r.Routes) + len(r.Clusters) + len(r.Endpoints)
	c := cache.New()
	for _, id := range []string{"a", "b"} {
		if err := c.SetProxy(id, r.ByType()); err != nil {
			t.Fatal(err)
		}
	}
	c.RemoveProxy("a")
	if got := c.Len(); got != distinct {
		t.Fatalf("after one of two proxies left, %d resources remain, want %d", got, distinct)
	}
	if err := c.SetProxy("b", (&translate.Resources{}).ByType()); err != nil {
		t.Fatal(err)
	}
	if got := c.Len(); got != 0 {
		t.Fatalf("%d resources remain that no proxy holds", got)
	}
}
