package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// floor is the bare server that measures the wire floor: it pushes one
// pre-serialized response to every connected delta stream and times the
// ACKs. It does nothing else: no cache, no versions, no marshaling.
type floor struct {
	addr string
	gs   *grpc.Server

	mu      sync.Mutex
	streams map[chan []byte]struct{}
	acks    chan struct{}
}

const deltaADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

func startFloor() (*floor, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &floor{addr: lis.Addr().String(), streams: map[chan []byte]struct{}{}, acks: make(chan struct{}, 1<<16)}
	f.gs = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(f.serve))
	go func() { _ = f.gs.Serve(lis) }()
	return f, nil
}

func (f *floor) stop() { f.gs.Stop() }

// serve holds one delta stream: it sends what push hands it, and reports
// every ACK.
func (f *floor) serve(_ any, stream grpc.ServerStream) error {
	if m, _ := grpc.MethodFromServerStream(stream); m != deltaADS {
		return fmt.Errorf("the floor serves %s only", deltaADS)
	}
	sends := make(chan []byte, 1)
	f.mu.Lock()
	f.streams[sends] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, sends)
		f.mu.Unlock()
	}()
	errc := make(chan error, 1)
	go func() {
		for {
			req := &discovery.DeltaDiscoveryRequest{}
			if err := stream.RecvMsg(req); err != nil {
				errc <- err
				return
			}
			if req.GetResponseNonce() != "" {
				f.acks <- struct{}{}
			}
		}
	}()
	for {
		select {
		case b := <-sends:
			if err := stream.SendMsg(rawFrame(b)); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

// push sends b to every stream and waits for n ACKs.
func (f *floor) push(ctx context.Context, b []byte, n int) (time.Duration, error) {
	if len(b) == 0 {
		return 0, errors.New("no response to push yet: time a full event first")
	}
	for len(f.acks) > 0 {
		<-f.acks
	}
	if err := f.waitStreams(ctx, n); err != nil {
		return 0, err
	}
	f.mu.Lock()
	start := time.Now()
	for s := range f.streams {
		s <- b
	}
	f.mu.Unlock()
	for range n {
		select {
		case <-f.acks:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Minute):
			return 0, errors.New("the floor's clients did not all ACK within 5 minutes")
		}
	}
	return time.Since(start), nil
}

// waitStreams waits until n streams are connected.
func (f *floor) waitStreams(ctx context.Context, n int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		f.mu.Lock()
		got := len(f.streams)
		f.mu.Unlock()
		if got == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d streams connected to the floor, want %d", got, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rawFrame is a message already serialized.
type rawFrame []byte

// rawCodec sends a rawFrame as it is and handles everything else as
// protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawFrame); ok {
		return b, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

func (rawCodec) Name() string { return "proto" }
