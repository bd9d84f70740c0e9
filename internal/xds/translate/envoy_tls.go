package translate

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// EnvoyCerts says where sidecars read their certificate and the roots.
type EnvoyCerts string

const (
	// EnvoyCertsNone means sidecars have no certificate; all traffic is plain.
	EnvoyCertsNone EnvoyCerts = ""
	// EnvoyCertsSDS means the SDS secrets SecretCertificate and SecretRoots on
	// the sidecar's own xDS stream.
	EnvoyCertsSDS EnvoyCerts = "sds"
	// EnvoyCertsFiles means the pod certificate and the root bundle as files
	// (wire.CertsDir, wire.RootsFile), reloaded when their directories
	// change.
	EnvoyCertsFiles EnvoyCerts = "files"
)

// envoyCommonTLS is a sidecar's certificate and trusted roots, with the
// peer's SPIFFE IDs to accept (none: any identity from the mesh CA).
func envoyCommonTLS(certs EnvoyCerts, sans []string) *tlsv3.CommonTlsContext {
	var matchers []*tlsv3.SubjectAltNameMatcher
	for _, id := range sans {
		matchers = append(matchers, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}})
	}
	if certs == EnvoyCertsFiles {
		file := func(p string) *corev3.DataSource {
			return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
		}
		return &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(wire.CertChainFile), PrivateKey: file(wire.KeyFile),
				WatchedDirectory: &corev3.WatchedDirectory{Path: wire.CertsDir}}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: file(wire.RootsFile), WatchedDirectory: &corev3.WatchedDirectory{Path: wire.RootsDir}, MatchTypedSubjectAltNames: matchers,
			}},
		}
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: SecretCertificate, SdsConfig: adsSource}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: matchers},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: SecretRoots, SdsConfig: adsSource},
		}},
	}
}

func envoyUpstreamTLS(certs EnvoyCerts, sans []string) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{CommonTlsContext: envoyCommonTLS(certs, sans)})}}
}

func envoyDownstreamTLS(certs EnvoyCerts) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true),
			CommonTlsContext: envoyCommonTLS(certs, nil)})}}
}

// withTLS returns clusters with a copy, given the transport socket that
// tls makes, in place of each cluster that tls names (identities to
// check); clusters itself when there is none.
func withTLS(clusters []*clusterv3.Cluster, tls map[string][]string, socket func([]string) *corev3.TransportSocket) []*clusterv3.Cluster {
	out, copied := clusters, false
	for i, c := range clusters {
		ids, ok := tls[c.Name]
		if !ok {
			continue
		}
		if !copied {
			out, copied = slices.Clone(clusters), true
		}
		cp := proto.Clone(c).(*clusterv3.Cluster)
		cp.TransportSocket = socket(ids)
		out[i] = cp
	}
	return out
}

// inboundChains are the filter chains of one inbound port in its mode:
// STRICT takes mTLS only; PERMISSIVE and DISABLE take what comes as it
// comes (plain text, or the application's own TLS passed through). weft's
// clients speak mTLS only to STRICT endpoints, so a PERMISSIVE port needs
// no TLS chain, and none is added: a TLS chain told apart by the TLS
// inspector would terminate the application's own TLS with the mesh's
// certificate, and the inspector would hold server-first protocols.
func inboundChains(plain *listenerv3.FilterChain, mode meshv1.MTLSMode, certs EnvoyCerts) []*listenerv3.FilterChain {
	if certs == EnvoyCertsNone || mode != meshv1.MTLSStrict {
		return []*listenerv3.FilterChain{plain}
	}
	tls := proto.Clone(plain).(*listenerv3.FilterChain)
	tls.TransportSocket = envoyDownstreamTLS(certs)
	return []*listenerv3.FilterChain{tls}
}
