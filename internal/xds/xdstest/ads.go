package xdstest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Recorder is a raw state-of-the-world ADS client on the generated stub:
// it asks for every resource of the types it is given, keeps each response
// exactly as it arrived, and acknowledges it while Acking is true. It is
// how a test sees the very resources and versions a proxy was sent.
type Recorder struct {
	// Acking says whether responses are acknowledged (true from the
	// start); a response that arrives while it is false stays
	// unanswered, and the server sends nothing more of its type.
	Acking atomic.Bool

	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	mu     sync.Mutex
	// received and acked are the last response of each type, and the
	// last one acknowledged.
	received, acked map[string]*discovery.DiscoveryResponse
	changed         chan struct{}
	err             error
}

// NewRecorder opens an ADS stream to ads as node (with metadata, which
// may be nil) and asks for everything of each type.
func NewRecorder(t testing.TB, ads, node string, metadata *structpb.Struct, typeURLs ...string) *Recorder {
	t.Helper()
	cc, err := grpc.NewClient(ads, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return NewRecorderConn(t, cc, node, metadata, typeURLs...)
}

// NewRecorderConn is NewRecorder on a connection of the caller's (TLS and
// a token, say).
func NewRecorderConn(t testing.TB, cc *grpc.ClientConn, node string, metadata *structpb.Struct, typeURLs ...string) *Recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{stream: stream, received: map[string]*discovery.DiscoveryResponse{}, acked: map[string]*discovery.DiscoveryResponse{},
		changed: make(chan struct{}, 1)}
	r.Acking.Store(true)
	n := &corev3.Node{Id: node, Metadata: metadata}
	for _, typeURL := range typeURLs {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: n, TypeUrl: typeURL}); err != nil {
			t.Fatal(err)
		}
	}
	go r.receive()
	return r
}

func (r *Recorder) receive() {
	for {
		resp, err := r.stream.Recv()
		r.mu.Lock()
		if err != nil {
			r.err = err
			r.mu.Unlock()
			r.signal()
			return
		}
		r.received[resp.GetTypeUrl()] = resp
		ack := r.Acking.Load()
		if ack {
			// The stream's goroutine is the only sender after the first
			// requests: an ACK is sent before the next response is read.
			err = r.stream.Send(&discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
			if err == nil {
				r.acked[resp.GetTypeUrl()] = resp
			} else {
				r.err = err
			}
		}
		r.mu.Unlock()
		r.signal()
	}
}

func (r *Recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Responses returns copies of the last response of each type received and
// of the last acknowledged.
func (r *Recorder) Responses() (received, acked map[string]*discovery.DiscoveryResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	received, acked = map[string]*discovery.DiscoveryResponse{}, map[string]*discovery.DiscoveryResponse{}
	for t, resp := range r.received {
		received[t] = proto.Clone(resp).(*discovery.DiscoveryResponse)
	}
	for t, resp := range r.acked {
		acked[t] = proto.Clone(resp).(*discovery.DiscoveryResponse)
	}
	return received, acked
}

// Wait waits until done says yes to what was received and acknowledged,
// or ctx ends.
func (r *Recorder) Wait(ctx context.Context, done func(received, acked map[string]*discovery.DiscoveryResponse) bool) error {
	for {
		received, acked := r.Responses()
		if done(received, acked) {
			return nil
		}
		r.mu.Lock()
		err := r.err
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("the ADS stream ended: %w", err)
		}
		select {
		case <-r.changed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for responses: %w (received %d types, acknowledged %d)", ctx.Err(), len(received), len(acked))
		}
	}
}
