package translate

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func clusterNamed(cs []*clusterv3.Cluster, name string) *clusterv3.Cluster {
	i := slices.IndexFunc(cs, func(c *clusterv3.Cluster) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return cs[i]
}

func upstreamSANs(t *testing.T, c *clusterv3.Cluster) []string {
	t.Helper()
	if c.TransportSocket == nil {
		return nil
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.CommonTlsContext.GetTlsCertificateProviderInstance().GetInstanceName() != wire.CertProviderInstance ||
		ctx.CommonTlsContext.GetValidationContext().GetCaCertificateProviderInstance().GetInstanceName() != wire.CertProviderInstance {
		t.Errorf("cluster %s: TLS without the workload's certificate provider: %v", c.Name, &ctx)
	}
	var sans []string
	for _, m := range ctx.CommonTlsContext.GetValidationContext().GetMatchSubjectAltNames() { //nolint:staticcheck // the field grpc-go reads
		sans = append(sans, m.GetExact())
	}
	return sans
}

// TestProxylessMTLS: under a STRICT PeerAuthentication, with pod
// certificates, proxyless clients get TLS clusters that check the
// backends' SPIFFE IDs (per subset), Envoy sidecars keep the plain
// clusters, and a proxyless server's Listener requires a client
// certificate; without the option, or without a STRICT policy, all is
// plain text.
func TestProxylessMTLS(t *testing.T) {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080))
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	m := mesh.Build(in)
	sh, err := BuildShared(m, nil, Options{ProxylessMTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	s := m.Services[m.Order[0]]
	p := s.Ports[0]
	v1 := "spiffe://cluster.local/ns/bookinfo/sa/reviews-v1"
	v2 := "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2"
	for sub, want := range map[string][]string{"": {v1, v2}, "v1": {v1}, "v2": {v2}} {
		name := ClusterName(s, p, sub)
		if got := upstreamSANs(t, clusterNamed(sh.GRPC.Clusters, name)); !slices.Equal(got, want) {
			t.Errorf("proxyless cluster %s checks %v, want %v", name, got, want)
		}
		if c := clusterNamed(sh.Envoy.Clusters, name); c == nil || c.TransportSocket != nil {
			t.Errorf("Envoy's cluster %s: %v", name, c)
		}
	}
	own, err := Own(sh, Proxy{ID: "reviews-v1.bookinfo", Pod: "bookinfo/reviews-v1", Flavour: wire.FlavourGRPC})
	if err != nil {
		t.Fatal(err)
	}
	if len(own.Listeners) != 1 || own.Listeners[0].Name != wire.ServerListenerName("10.1.0.1:9080") {
		t.Fatalf("server listeners %v", own.Listeners)
	}
	requiresClientCert(t, own.Listeners[0], true)

	// Plain text: the option off (certificates over SDS, which grpc-go
	// cannot read), or no STRICT policy.
	plain, err := BuildShared(m, sh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	permissive := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080)))
	permissiveSh, err := BuildShared(permissive, nil, Options{ProxylessMTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range map[string]*Shared{"option off": plain, "PERMISSIVE": permissiveSh} {
		for _, c := range set.GRPC.Clusters {
			if c.TransportSocket != nil {
				t.Errorf("%s: cluster %s has TLS", name, c.Name)
			}
		}
		own, err := Own(set, Proxy{ID: "reviews-v1.bookinfo", Pod: "bookinfo/reviews-v1", Flavour: wire.FlavourGRPC})
		if err != nil {
			t.Fatal(err)
		}
		requiresClientCert(t, own.Listeners[0], false)
	}

	// An unchanged service keeps its TLS clusters' objects.
	again, err := BuildShared(mesh.Build(in), sh, Options{ProxylessMTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range sh.GRPC.Clusters {
		if clusterNamed(again.GRPC.Clusters, c.Name) != c {
			t.Errorf("cluster %s was made again for an unchanged service", c.Name)
		}
	}
}

func requiresClientCert(t *testing.T, l *listenerv3.Listener, want bool) {
	t.Helper()
	ts := l.FilterChains[0].TransportSocket
	if (ts != nil) != want {
		t.Fatalf("listener %s: TLS %v, want %v", l.Name, ts != nil, want)
	}
	if ts == nil {
		return
	}
	var ctx tlsv3.DownstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		t.Fatal(err)
	}
	if !ctx.GetRequireClientCertificate().GetValue() || ctx.CommonTlsContext.GetTlsCertificateProviderInstance().GetInstanceName() != wire.CertProviderInstance {
		t.Errorf("listener %s: %v", l.Name, &ctx)
	}
}
