package translate

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func size(r *Resources) (resources int, bytes int) {
	add := func(m proto.Message) { resources++; bytes += proto.Size(m) }
	for _, x := range r.Listeners {
		add(x)
	}
	for _, x := range r.Routes {
		add(x)
	}
	for _, x := range r.Clusters {
		add(x)
	}
	for _, x := range r.Endpoints {
		add(x)
	}
	return
}

// reportProxy reports the number and size of the resources a proxy is
// given, and returns them.
func reportProxy(b *testing.B, sh *Shared, proxy Proxy) *Resources {
	b.Helper()
	r, err := forProxy(sh, proxy)
	if err != nil {
		b.Fatal(err)
	}
	res, bytes := size(r)
	b.ReportMetric(float64(res), "resources")
	b.ReportMetric(float64(bytes)/1024, "KB/proxy")
	return r
}

// BenchmarkTranslate translates a whole mesh as the xDS server does, the
// shared set from scratch and the proxy's own resources, per flavour and
// size, and reports the time per cluster and the size of the result.
func BenchmarkTranslate(b *testing.B) {
	benchTranslate(b, []int{100, 1000, 10000}, xdstest.ScaleInput)
}

// BenchmarkTranslateAllFeatures is BenchmarkTranslate with every field
// weft translates set on every tenth service's policy.
func BenchmarkTranslateAllFeatures(b *testing.B) {
	benchTranslate(b, []int{100, 1000}, xdstest.ScaleInputAllFeatures)
}

func benchTranslate(b *testing.B, sizes []int, input func(int) mesh.Input) {
	for _, n := range sizes {
		m := mesh.Build(input(n))
		for _, f := range []wire.Flavour{wire.FlavourGRPC, wire.FlavourEnvoy} {
			b.Run(fmt.Sprintf("%s/services=%d", f, n), func(b *testing.B) {
				proxy := Proxy{ID: "p", Flavour: f, Pod: "ns-0/svc-0-0"}
				var sh *Shared
				for b.Loop() {
					var err error
					if sh, err = BuildShared(m, nil, Options{}); err != nil {
						b.Fatal(err)
					}
					if _, err := Own(sh, proxy); err != nil {
						b.Fatal(err)
					}
					if sh.HasLocal(f) {
						if _, err := sh.Local(f, sh.LocalityOf(proxy.Pod), m.Everything()); err != nil {
							b.Fatal(err)
						}
					}
				}
				r := reportProxy(b, sh, proxy)
				b.ReportMetric(float64(len(r.Clusters)), "clusters")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(r.Clusters))/1000, "µs/cluster")
			})
		}
	}
}

// BenchmarkTranslateChange translates a model in which one endpoint of one
// service changed, given the previous model's translation: the cost of
// the most common change.
func BenchmarkTranslateChange(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			base := xdstest.ScaleInput(n)
			flip := xdstest.ScaleInput(n)
			flip.EndpointSlices[0].Endpoints[0].Conditions.Ready = new(bool)
			models := []*mesh.Model{mesh.Build(flip), mesh.Build(base)}
			sh, err := BuildShared(models[1], nil, Options{})
			if err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				if sh, err = BuildShared(models[i%2], sh, Options{}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkModelBuild builds the model from its inputs, the cost of every
// debounced rebuild.
func BenchmarkModelBuild(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		in := xdstest.ScaleInput(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				mesh.Build(in)
			}
		})
	}
}

// BenchmarkClusters makes and validates only the EDS clusters of a mesh
// (what a count of "time per cluster generated" covers in other meshes),
// for comparison with the whole translation above.
func BenchmarkClusters(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		m := mesh.Build(xdstest.ScaleInput(n))
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			clusters := 0
			for b.Loop() {
				clusters = 0
				for _, key := range m.Order {
					s := m.Services[key]
					for _, p := range s.Ports {
						for _, sub := range append([]string{""}, subsetNames(s)...) {
							if err := edsCluster(ClusterName(s, p, sub), p).ValidateAll(); err != nil {
								b.Fatal(err)
							}
							clusters++
						}
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(clusters)/1000, "µs/cluster")
		})
	}
}

func subsetNames(s *mesh.Service) []string {
	var out []string
	for _, sub := range s.Subsets {
		out = append(out, sub.Name)
	}
	return out
}

// BenchmarkScoped puts together one scope's set from a translated mesh of
// 1,000 services in 50 namespaces, and reports what a proxy of the first
// namespace is given: every service (default inbound all), or only its own
// namespace's 20 (default inbound namespace, the same as allow rules that
// name the caller's namespace).
func BenchmarkScoped(b *testing.B) {
	for _, def := range []wire.DefaultInbound{wire.DefaultInboundAll, wire.DefaultInboundNamespace} {
		in := xdstest.ScaleInput(1000)
		in.DefaultInbound = def
		m := mesh.Build(in)
		sh, err := BuildShared(m, nil, Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range []wire.Flavour{wire.FlavourGRPC, wire.FlavourEnvoy} {
			b.Run(fmt.Sprintf("%s/default-inbound=%s", f, def), func(b *testing.B) {
				proxy := Proxy{ID: "p", Flavour: f, Pod: "ns-0/svc-0-0"}
				sc := sh.ScopeOf(sh.CallerOf(proxy.Pod))
				for b.Loop() {
					sh.scoped = scopedSets{}
					if _, err := sh.Scoped(proxy.Variant(), sc); err != nil {
						b.Fatal(err)
					}
				}
				reportProxy(b, sh, proxy)
				b.ReportMetric(float64(len(sc.Services)), "services")
			})
		}
	}
}
