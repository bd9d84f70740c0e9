package server

import (
	"fmt"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
)

// sharedCodec is the server's gRPC codec. A change that many proxies
// receive alike reaches each of them as a delta response whose list of
// resources is one shared slice (the cache makes it so); the codec encodes
// that list once and sends the same bytes on every stream, with only the
// response's own small fields (nonce, version) encoded per stream. Every
// other message goes through gRPC's protobuf codec.
type sharedCodec struct {
	proto encoding.CodecV2

	mu sync.Mutex
	// blocks are the last large lists encoded, newest last. Each keeps its
	// slice, so that no other slice can take its address while it is here.
	blocks []block
	total  int
}

type block struct {
	list    []*discovery.Resource
	encoded []byte
}

// A list is remembered once encoded when it is at least sharedBytes long
// (small lists, such as a sidecar's own, are encoded each time and do not
// push large shared ones out); at most sharedBlocks lists and sharedTotal
// bytes are remembered.
const (
	sharedBytes  = 1024
	sharedBlocks = 32
	sharedTotal  = 64 << 20
)

var resourcesField = (&discovery.DeltaDiscoveryResponse{}).ProtoReflect().Descriptor().Fields().ByName("resources").Number()

func newSharedCodec() *sharedCodec {
	return &sharedCodec{proto: encoding.GetCodecV2(proto.Name)}
}

func (c *sharedCodec) Name() string { return proto.Name }

func (c *sharedCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c *sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*discovery.DeltaDiscoveryResponse)
	if !ok || len(resp.Resources) == 0 {
		return c.proto.Marshal(v)
	}
	list, err := c.encoded(resp.Resources)
	if err != nil {
		return nil, err
	}
	// The response is this stream's own; its list is shared and left as
	// it is. Fields may come in any order on the wire.
	resources := resp.Resources
	resp.Resources = nil
	rest, err := protov2.Marshal(resp)
	resp.Resources = resources
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(rest), mem.SliceBuffer(list)}, nil
}

// encoded returns the wire form of a list of resources as the repeated
// field of a delta response, encoding it only the first time it is seen.
func (c *sharedCodec) encoded(list []*discovery.Resource) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.blocks {
		if len(b.list) == len(list) && &b.list[0] == &list[0] {
			return b.encoded, nil
		}
	}
	var out []byte
	for _, r := range list {
		out = protowire.AppendTag(out, resourcesField, protowire.BytesType)
		out = protowire.AppendVarint(out, uint64(protov2.Size(r)))
		var err error
		if out, err = (protov2.MarshalOptions{}).MarshalAppend(out, r); err != nil {
			return nil, fmt.Errorf("encoding resource %s: %w", r.GetName(), err)
		}
	}
	if len(out) < sharedBytes || len(out) > sharedTotal {
		return out, nil
	}
	for len(c.blocks) > 0 && (len(c.blocks) == sharedBlocks || c.total+len(out) > sharedTotal) {
		c.total -= len(c.blocks[0].encoded)
		c.blocks = c.blocks[1:]
	}
	c.blocks = append(c.blocks, block{list: list, encoded: out})
	c.total += len(out)
	return out, nil
}
