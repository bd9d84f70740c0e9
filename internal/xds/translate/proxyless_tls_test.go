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

// TestProxylessMTLS: under a STRICT PeerAuthentication, a proxyless
// proxy injected with pod certificates gets TLS clusters that check the
// backends' SPIFFE IDs (per subset) and a server Listener that requires a
// client certificate, whole or scoped; one injected with SDS (or saying
// nothing, under a controller whose delivery is SDS) gets plain text from
// the same translation, never TLS naming a certificate provider its
// bootstrap lacks; Envoy sidecars keep the plain clusters (no
// EnvoyCerts); without a STRICT policy all is plain text.
func TestProxylessMTLS(t *testing.T) {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080))
	in.PeerAuthentications = append(in.PeerAuthentications, xdstest.StrictPeerAuthentication("bookinfo"))
	m := mesh.Build(in)
	sh, err := BuildShared(m, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := m.Services[m.Order[0]]
	p := s.Ports[0]
	v1 := "spiffe://cluster.local/ns/bookinfo/sa/reviews-v1"
	v2 := "spiffe://cluster.local/ns/bookinfo/sa/reviews-v2"
	podCert := Proxy{ID: "client.bookinfo", Pod: "bookinfo/client", Flavour: wire.FlavourGRPC, Delivery: wire.DeliveryPodCertificate}
	scoped := m.ScopeOf(mesh.Caller{Namespace: "bookinfo", ServiceAccount: "client"})
	scoped.ID = "narrow" // the same services, put together as a narrower scope's set
	narrow, err := sh.Scoped(podCert.Variant(), scoped)
	if err != nil {
		t.Fatal(err)
	}
	for sub, want := range map[string][]string{"": {v1, v2}, "v1": {v1}, "v2": {v2}} {
		name := ClusterName(s, p, sub)
		if got := upstreamSANs(t, clusterNamed(sh.GRPCMTLS.Clusters, name)); !slices.Equal(got, want) {
			t.Errorf("proxyless cluster %s with pod certificates checks %v, want %v", name, got, want)
		}
		if got := upstreamSANs(t, clusterNamed(narrow.Clusters, name)); !slices.Equal(got, want) {
			t.Errorf("proxyless cluster %s with pod certificates, scoped, checks %v, want %v", name, got, want)
		}
		if c := clusterNamed(sh.GRPC.Clusters, name); c == nil || c.TransportSocket != nil {
			t.Errorf("proxyless cluster %s without certificates: %v", name, c)
		}
		if c := clusterNamed(sh.Envoy.Clusters, name); c == nil || c.TransportSocket != nil {
			t.Errorf("Envoy's cluster %s: %v", name, c)
		}
	}
	server := Proxy{ID: "reviews-v1.bookinfo", Pod: "bookinfo/reviews-v1", Flavour: wire.FlavourGRPC, Delivery: wire.DeliveryPodCertificate}
	own, err := Own(sh, server)
	if err != nil {
		t.Fatal(err)
	}
	if len(own.Listeners) != 1 || own.Listeners[0].Name != wire.ServerListenerName("10.1.0.1:9080") {
		t.Fatalf("server listeners %v", own.Listeners)
	}
	requiresClientCert(t, own.Listeners[0], true)

	// Plain text, from the same translation: a proxyless proxy without
	// pod certificates (SDS, which grpc-go cannot read, or no delivery
	// said), whole or scoped; and every proxy without a STRICT policy.
	permissive := mesh.Build(xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080)))
	permissiveSh, err := BuildShared(permissive, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		sh       *Shared
		delivery wire.CertDelivery
	}{"SDS": {sh, wire.DeliverySDS}, "not said": {sh, ""}, "PERMISSIVE": {permissiveSh, wire.DeliveryPodCertificate}} {
		proxy := Proxy{ID: "client.bookinfo", Pod: "bookinfo/client", Flavour: wire.FlavourGRPC, Delivery: c.delivery}
		sc := c.sh.ScopeOf(mesh.Caller{Namespace: "bookinfo", ServiceAccount: "client"})
		whole, err := c.sh.Scoped(proxy.Variant(), sc)
		if err != nil {
			t.Fatal(err)
		}
		sc.ID = "narrow"
		narrow, err := c.sh.Scoped(proxy.Variant(), sc)
		if err != nil {
			t.Fatal(err)
		}
		for _, set := range []*Resources{whole, narrow} {
			for _, cl := range set.Clusters {
				if cl.TransportSocket != nil {
					t.Errorf("%s: cluster %s has TLS", name, cl.Name)
				}
			}
		}
		server.Delivery = c.delivery
		own, err := Own(c.sh, server)
		if err != nil {
			t.Fatal(err)
		}
		requiresClientCert(t, own.Listeners[0], false)
	}

	// An unchanged service keeps its clusters' objects, with TLS and
	// without.
	again, err := BuildShared(mesh.Build(in), sh, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []struct{ before, after *Resources }{{sh.GRPC, again.GRPC}, {sh.GRPCMTLS, again.GRPCMTLS}} {
		for _, c := range set.before.Clusters {
			if clusterNamed(set.after.Clusters, c.Name) != c {
				t.Errorf("cluster %s was made again for an unchanged service", c.Name)
			}
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
