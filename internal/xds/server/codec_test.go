package server

import (
	"fmt"
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The codec's bytes decode to the very response it was given, for a
// shared list as for a short one, and a list shared by many responses is
// encoded once.
func TestSharedCodecRoundTrip(t *testing.T) {
	c := newSharedCodec()
	var list []*discovery.Resource
	for i := range 20 {
		a, err := anypb.New(wrapperspb.String(fmt.Sprintf("resource %d %0100d", i, i)))
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, &discovery.Resource{Name: fmt.Sprintf("r%d", i), Version: "v1", Resource: a})
	}
	for _, resources := range [][]*discovery.Resource{list, list, list[:1], list[:1]} {
		for nonce := range 3 {
			resp := &discovery.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, SystemVersionInfo: "7",
				Nonce: fmt.Sprint(nonce), Resources: resources, RemovedResources: []string{"gone"}}
			want := proto.Clone(resp)
			out, err := c.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			got := &discovery.DeltaDiscoveryResponse{}
			if err := proto.Unmarshal(out.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("decoded %v, want %v", got, want)
			}
			if len(resp.Resources) != len(resources) {
				t.Fatal("the codec changed the response")
			}
		}
	}
	if len(c.blocks) != 1 {
		t.Fatalf("%d lists remembered, want the large one alone", len(c.blocks))
	}
}
