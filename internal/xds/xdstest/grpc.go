package xdstest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weftmesh/weft/internal/xds/cache"
)

// StartBackend serves any gRPC method on addr and names itself in the
// response header "backend". It returns the port.
func StartBackend(t testing.TB, addr, name string) int32 {
	t.Helper()
	return StartFlakyBackend(t, addr, name, 0)
}

// StartFlakyBackend is StartBackend failing every failEvery-th call with
// UNAVAILABLE (none when 0).
func StartFlakyBackend(t testing.TB, addr, name string, failEvery int64) int32 {
	t.Helper()
	return StartFaultyBackend(t, addr, name, 0, failEvery).Port
}

// FaultyBackend is a test backend whose behaviour a test may change while
// it runs, and which it may stop and start again on the same address.
type FaultyBackend struct {
	Port int32
	// FailEvery fails every n-th call with UNAVAILABLE (0: none); Delay
	// is how long each call waits first, in nanoseconds.
	FailEvery atomic.Int64
	Delay     atomic.Int64
	// Served counts the calls received.
	Served atomic.Int64
	calls  atomic.Int64

	t    testing.TB
	addr string
	name string
	mu   sync.Mutex
	srv  *grpc.Server
}

// StartFaultyBackend serves any gRPC method on addr as backend name (the
// response header "backend", when name is set): it waits delay, then
// fails every failEvery-th call with UNAVAILABLE.
func StartFaultyBackend(t testing.TB, addr, name string, delay time.Duration, failEvery int64) *FaultyBackend {
	t.Helper()
	b := &FaultyBackend{t: t, addr: addr, name: name}
	b.FailEvery.Store(failEvery)
	b.Delay.Store(int64(delay))
	b.Start()
	t.Cleanup(b.Stop)
	return b
}

// Start serves again after Stop, on the same address and port.
func (b *FaultyBackend) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	addr := b.addr
	if b.Port != 0 {
		host, _, err := net.SplitHostPort(b.addr)
		if err != nil {
			b.t.Fatal(err)
		}
		addr = net.JoinHostPort(host, strconv.Itoa(int(b.Port)))
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.Port = int32(lis.Addr().(*net.TCPAddr).Port)
	// The goroutine serves this server, not whatever b.srv holds when it
	// runs: a Stop may come first and clear it.
	srv := grpc.NewServer(grpc.UnknownServiceHandler(b.handle))
	b.srv = srv
	go func() { _ = srv.Serve(lis) }()
}

// Stop closes the listener and every connection: clients see the backend
// gone (connection refused) until Start.
func (b *FaultyBackend) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		b.srv.Stop()
		b.srv = nil
	}
}

func (b *FaultyBackend) handle(_ any, stream grpc.ServerStream) error {
	b.Served.Add(1)
	var in emptypb.Empty
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	if delay := time.Duration(b.Delay.Load()); delay > 0 {
		select {
		case <-time.After(delay):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	// A failure comes before any header: a client retries only calls
	// that received no response headers yet.
	if every := b.FailEvery.Load(); every > 0 && b.calls.Add(1)%every == 0 {
		return status.Error(codes.Unavailable, "failing on purpose")
	}
	if b.name != "" {
		if err := stream.SetHeader(metadata.Pairs("backend", b.name)); err != nil {
			return err
		}
	}
	return stream.SendMsg(&emptypb.Empty{})
}

// ServeADS serves a cache over ADS on 127.0.0.1 and returns the address.
func ServeADS(t testing.TB, c *cache.Cache, cb serverv3.Callbacks) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	xs := cache.NewADS(context.Background(), c, cb)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// Client is a grpc-go channel that resolves its target with grpc-go's own
// xDS client, bootstrapped from ads as node id.
type Client struct {
	*grpc.ClientConn
}

// NewClient dials xds:///<target> with its own xDS client and node id.
func NewClient(t testing.TB, ads, node, target string) *Client {
	t.Helper()
	bootstrap := fmt.Sprintf(`{"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q}}`, ads, node)
	resolver, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &Client{cc}
}

// Call makes one RPC and returns the name of the backend that answered.
func (c *Client) Call(ctx context.Context, opts ...grpc.CallOption) (string, error) {
	var md metadata.MD
	err := c.Invoke(ctx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{}, append(opts, grpc.Header(&md))...)
	if b := md.Get("backend"); len(b) > 0 {
		return b[0], err
	}
	return "", err
}

// Hammer makes RPCs without pause until the returned stop is called, which
// reports how many were made and how many failed.
func (c *Client) Hammer(ctx context.Context) (stop func() (sent, failed int64)) {
	var sentN, failedN atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			sentN.Add(1)
			if _, err := c.Call(ctx); err != nil {
				failedN.Add(1)
			}
		}
	}()
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return sentN.Load(), failedN.Load()
	}
}

// Burst is what n calls made at once came to: answered, refused at once
// (Unavailable within 250 ms, as a request limit refuses), and anything
// else, with the first such error.
type Burst struct {
	Answered, Refused, Other int
	Err                      error
}

// Burst makes n calls at once and sorts how each ended.
func (c *Client) Burst(ctx context.Context, n int) Burst {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var b Burst
	for range n {
		wg.Go(func() {
			start := time.Now()
			_, err := c.Call(ctx)
			took := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				b.Answered++
			case status.Code(err) == codes.Unavailable && took < 250*time.Millisecond:
				b.Refused++
			default:
				b.Other++
				if b.Err == nil {
					b.Err = fmt.Errorf("a call ended with %w after %v", err, took)
				}
			}
		})
	}
	wg.Wait()
	return b
}

// HoldsOneAtATime reports whether a limit of one request is in force: it
// makes n calls at once against a backend slower than the burst (up to
// three bursts), and wants one answered and the rest refused at once.
// grpc-go frees a request's slot just after its caller has the answer, so
// on a loaded machine the slot of a call before may still be taken and
// every call of a burst refused; a limit that does not hold refuses none,
// every time.
func (c *Client) HoldsOneAtATime(ctx context.Context, n int) error {
	var b Burst
	for try := range 3 {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if b = c.Burst(ctx, n); b.Answered == 1 && b.Refused == n-1 {
			return nil
		}
	}
	return fmt.Errorf("of %d calls at once %d were answered, %d refused at once and %d neither (%v); want 1 answered and the rest refused (three tries)",
		n, b.Answered, b.Refused, b.Other, b.Err)
}
