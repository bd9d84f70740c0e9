package server

import (
	"context"
	"fmt"
	"testing"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// BenchmarkEndpointChange pushes a model in which one endpoint of one of
// n services changed to p connected proxies, the most common change in a
// mesh, and reports the serializations it costs.
func BenchmarkEndpointChange(b *testing.B) {
	for _, tc := range []struct{ services, proxies int }{{100, 100}, {1000, 100}, {1000, 1000}} {
		b.Run(fmt.Sprintf("services=%d/proxies=%d", tc.services, tc.proxies), func(b *testing.B) {
			s, err := New(Options{Address: "127.0.0.1:0", Log: logr.Discard()})
			if err != nil {
				b.Fatal(err)
			}
			base := xdstest.ScaleInput(tc.services)
			s.OnModel(context.Background(), mesh.Build(base))
			for i := range tc.proxies {
				id := fmt.Sprintf("proxy-%d", i)
				s.sched.connect(translate.Proxy{ID: id, Flavour: wire.FlavourGRPC}, auth.Identity{}, false)
			}
			// Two models that differ in one endpoint's readiness.
			flip := xdstest.ScaleInput(tc.services)
			flip.EndpointSlices[0].Endpoints[0].Conditions.Ready = new(bool)
			models := []*mesh.Model{mesh.Build(flip), mesh.Build(base)}
			before := s.cache.Marshals()
			i := 0
			for b.Loop() {
				s.OnModel(context.Background(), models[i%2])
				i++
			}
			b.ReportMetric(float64(s.cache.Marshals()-before)/float64(i), "marshals/change")
		})
	}
}
