package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/wire"
)

// clientSet is n delta xDS clients, each on its own connection, that
// subscribe to every type as an Envoy sidecar would and ACK every response
// at once.
type clientSet struct {
	cancel context.CancelFunc
	conns  []*grpc.ClientConn
	wg     sync.WaitGroup
	recv   atomic.Int64
}

var types = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

func newClientSet(ctx context.Context) (*clientSet, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &clientSet{cancel: cancel}, ctx
}

func connect(ctx context.Context, addr string, n int) (*clientSet, error) {
	cs, ctx := newClientSet(ctx)
	if err := cs.add(ctx, addr, 0, n); err != nil {
		cs.close()
		return nil, err
	}
	return cs, nil
}

// add connects clients numbered from to to-1.
func (cs *clientSet) add(ctx context.Context, addr string, from, to int) error {
	for i := from; i < to; i++ {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.ForceCodecV2(headCodec{encoding.GetCodecV2(protoenc.Name)})),
			grpc.WithStatsHandler(counter{&cs.recv}))
		if err != nil {
			return err
		}
		cs.conns = append(cs.conns, cc)
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
		if err != nil {
			return fmt.Errorf("client %d: %w", i, err)
		}
		// A sidecar of a pod that no service selects: its own resources
		// are the same as every other client's.
		node := &corev3.Node{Id: wire.NodeID(fmt.Sprintf("load-%d", i), "loadtest"), Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy)),
		}}}
		for j, t := range types {
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: t}
			if j == 0 {
				req.Node = node
			}
			if err := stream.Send(req); err != nil {
				return fmt.Errorf("client %d: %w", i, err)
			}
		}
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				if err := stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
					return
				}
			}
		}()
	}
	return nil
}

func (cs *clientSet) bytes() int64 { return cs.recv.Load() }

func (cs *clientSet) close() {
	cs.cancel()
	for _, cc := range cs.conns {
		cc.Close()
	}
	cs.wg.Wait()
}

// counter counts the bytes received on the wire.
type counter struct{ n *atomic.Int64 }

func (c counter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c counter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok {
		c.n.Add(int64(in.WireLength))
	}
}
func (c counter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c counter) HandleConn(context.Context, stats.ConnStats)                       {}

// headCodec decodes of a delta response only what a client needs to ACK
// it (its type and nonce), skipping the resources: the clients of one
// process would otherwise hold a decoded copy of the mesh each.
type headCodec struct{ proto encoding.CodecV2 }

func (c headCodec) Name() string { return c.proto.Name() }

func (c headCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c headCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*discovery.DeltaDiscoveryResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	b := data.Materialize()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 4 || num == 5) {
			s, m := protowire.ConsumeString(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			if num == 4 {
				resp.TypeUrl = s
			} else {
				resp.Nonce = s
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}
