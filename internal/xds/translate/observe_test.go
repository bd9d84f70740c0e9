package translate

import (
	"fmt"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// TestObservability: with access logs and tracing on, every HTTP
// connection manager of a sidecar (outbound and inbound) logs and traces
// to the collector's cluster, which the shared set carries, and every TCP
// proxy logs; proxyless gRPC is untouched; bad options are refused naming
// the option.
func TestObservability(t *testing.T) {
	opts := Options{Observe: Observability{AccessLogFormat: "json", TracingEndpoint: "otel-collector.observability.svc:4317", TracingSampling: 10}}
	m := mesh.Build(bookinfo())
	r, err := translateFor(m, Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	var tracing *clusterv3.Cluster
	for _, c := range r.Clusters {
		if c.Name == TracingCluster {
			tracing = c
		}
	}
	if tracing == nil || tracing.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress() != "otel-collector.observability.svc" {
		t.Fatalf("no tracing cluster for the collector: %v", tracing)
	}
	hcms, tcps := 0, 0
	for _, l := range r.Listeners {
		for _, fc := range append(l.FilterChains, l.DefaultFilterChain) {
			for _, f := range fc.GetFilters() {
				switch cfg := f.GetTypedConfig(); {
				case cfg.MessageIs(&hcmv3.HttpConnectionManager{}):
					var h hcmv3.HttpConnectionManager
					if err := cfg.UnmarshalTo(&h); err != nil {
						t.Fatal(err)
					}
					hcms++
					if len(h.AccessLog) != 1 || h.Tracing == nil || h.Tracing.RandomSampling.GetValue() != 10 {
						t.Errorf("%s: access log %v, tracing %v", fc.Name, h.AccessLog, h.Tracing)
					}
				case cfg.MessageIs(&tcpproxyv3.TcpProxy{}):
					var tp tcpproxyv3.TcpProxy
					if err := cfg.UnmarshalTo(&tp); err != nil {
						t.Fatal(err)
					}
					tcps++
					if len(tp.AccessLog) != 1 {
						t.Errorf("%s: tcp_proxy without access log", fc.Name)
					}
				}
			}
		}
	}
	if hcms < 3 || tcps < 2 {
		t.Errorf("checked %d HTTP connection managers and %d TCP proxies", hcms, tcps)
	}
	grpc, err := translateFor(m, Proxy{ID: "client.bookinfo", Flavour: wire.FlavourGRPC}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range grpc.Clusters {
		if c.Name == TracingCluster {
			t.Error("proxyless gRPC got the tracing cluster")
		}
	}
	text, err := translateFor(m, Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"},
		Options{Observe: Observability{AccessLogFormat: "%START_TIME% %REQ(:PATH)% %RESPONSE_CODE%"}})
	if err != nil || text.Validate() != nil {
		t.Fatalf("a text access log format: %v", err)
	}
	for _, c := range []struct {
		o    Observability
		want string
	}{
		{Observability{TracingEndpoint: "collector"}, "host:port"},
		{Observability{TracingEndpoint: "collector:0"}, "bad port"},
		{Observability{TracingSampling: 120}, "percentage"},
	} {
		if err := c.o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.o, err, c.want)
		}
	}
}

// A policy's trace sampling overrides the mesh-wide one on every route of
// the port it shapes, exactly (parts per million), where tracing is on;
// with tracing off, or without the field, routes carry none; a value
// admission should have refused fails the service's translation naming
// the field.
func TestRouteTracing(t *testing.T) {
	for in, want := range map[string]uint32{"0": 0, "0.0001": 1, "0.5": 5000, "12.3456": 123456, "100": 1000000, "100.0": 1000000, "007": 70000} {
		if got, err := perMillion(in); err != nil || got != want {
			t.Errorf("perMillion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ".5", "5.", "100.0001", "1000", "1e2", "-1", "0.00001", "5%"} {
		if got, err := perMillion(in); err == nil {
			t.Errorf("perMillion(%q) = %d, want an error", in, got)
		}
	}

	in := bookinfo()
	in.TrafficPolicies[0].Spec.Tracing = &meshv1.Tracing{SamplingPercent: "0.25"}
	m := mesh.Build(in)
	sampled := func(obs Observability) map[string]*typev3.FractionalPercent {
		t.Helper()
		r, err := translateFor(m, Proxy{ID: "reviews-v1.bookinfo", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"}, Options{Observe: obs})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*typev3.FractionalPercent{}
		for _, rc := range r.Routes {
			for _, vh := range rc.VirtualHosts {
				for i, rt := range vh.Routes {
					out[fmt.Sprintf("%s[%d]", rc.Name, i)] = rt.GetTracing().GetRandomSampling()
				}
			}
		}
		return out
	}
	on := sampled(Observability{TracingEndpoint: "collector:4317", TracingSampling: 1})
	reviews := 0
	for route, s := range on {
		if strings.HasPrefix(route, "reviews.") {
			reviews++
			if s.GetNumerator() != 2500 || s.GetDenominator() != typev3.FractionalPercent_MILLION {
				t.Errorf("%s: sampling %v, want 2500 per million", route, s)
			}
		} else if s != nil {
			t.Errorf("%s: no policy shapes it, but it samples %v", route, s)
		}
	}
	if reviews < 2 {
		t.Errorf("only %d routes of reviews: %v", reviews, on)
	}
	for route, s := range sampled(Observability{}) {
		if s != nil {
			t.Errorf("tracing off: %s samples %v", route, s)
		}
	}

	in.TrafficPolicies[0].Spec.Tracing.SamplingPercent = "150"
	if _, err := BuildShared(mesh.Build(in), nil, Options{Observe: Observability{TracingEndpoint: "collector:4317"}}); err == nil ||
		!strings.Contains(err.Error(), "spec.tracing.samplingPercent") {
		t.Errorf("a sampling over 100: %v, want an error naming spec.tracing.samplingPercent", err)
	}
}
