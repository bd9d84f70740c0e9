package translate

import (
	"net"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Options shape a translation. (Whether a proxyless gRPC workload speaks
// mTLS is not an option of the translation but of the proxy: the
// delivery it was injected with, Proxy.Delivery.)
type Options struct {
	// EnvoyCerts says where sidecars read their certificates; with none,
	// sidecars speak plain text whatever the PeerAuthentications say.
	EnvoyCerts EnvoyCerts
	// TrustDomain of the callers' identities in allow rules (default
	// cluster.local).
	TrustDomain string
	// Observe is the sidecars' access logging and tracing.
	Observe Observability
}

// trustDomain is the options' trust domain or the default.
func (o Options) trustDomain() string {
	if o.TrustDomain == "" {
		return "cluster.local"
	}
	return o.TrustDomain
}

// allowFor returns the RBAC for a pod port from its service's allow rules.
func (sh *Shared) allowFor(pp PodPort, http bool) *rbacv3.RBAC {
	s := sh.model.Services[pp.Owner]
	if s == nil {
		return nil
	}
	if pp.Conflict {
		// Services with different rules target the port: nobody in.
		return &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}
	}
	return allowRules(s, pp.Service, sh.opts.trustDomain(), http)
}

var certProvider = &tlsv3.CertificateProviderPluginInstance{InstanceName: wire.CertProviderInstance}

// upstreamTLS is the client side of mTLS to endpoints with the given
// identities: the workload's own certificate, the mesh roots, and the
// server's SPIFFE ID checked against the identities (grpc-go reads
// match_subject_alt_names, not its typed successor).
func upstreamTLS(identities []string) *corev3.TransportSocket {
	sans := make([]*matcherv3.StringMatcher, len(identities))
	for i, id := range identities {
		sans[i] = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: id}}
	}
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: certProvider,
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			CaCertificateProviderInstance: certProvider,
			MatchSubjectAltNames:          sans, //nolint:staticcheck // the field grpc-go reads (see above)
		}},
	}}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// downstreamTLS is the server side of mTLS: a client certificate from the
// mesh CA is required.
var downstreamTLS = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
	TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: certProvider,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: certProvider,
			}},
		},
	}),
}}

// strictIdentities returns the identities of a cluster's endpoints when
// any of them takes mTLS only (STRICT) on the port, sorted; nil when the
// cluster is plain text. One STRICT endpoint makes the whole cluster TLS:
// grpc-go cannot choose TLS per endpoint (it refuses
// transport_socket_matches).
func strictIdentities(s *mesh.Service, p mesh.Port, subset string) []string {
	strict := false
	var ids []string
	for _, e := range s.Endpoints {
		port, ok := e.PortOf(p)
		if !ok || !s.InSubset(e, subset) {
			continue
		}
		if e.ModeFor(port) == meshv1.MTLSStrict {
			strict = true
		}
		if e.Identity != "" && !slices.Contains(ids, e.Identity) {
			ids = append(ids, e.Identity)
		}
	}
	if !strict || len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	return ids
}

// clusterTLS returns, by cluster name, the identities to check for each
// cluster of the service whose endpoints take mTLS (nil when none does).
func clusterTLS(s *mesh.Service) map[string][]string {
	var out map[string][]string
	for _, p := range s.Ports {
		subsets := []string{""}
		for _, sub := range s.Subsets {
			subsets = append(subsets, sub.Name)
		}
		for _, sub := range subsets {
			if ids := strictIdentities(s, p, sub); ids != nil {
				if out == nil {
					out = map[string][]string{}
				}
				out[ClusterName(s, p, sub)] = ids
			}
		}
	}
	return out
}

// serverListeners are a proxyless gRPC server's Listeners: one per pod
// port that a mesh HTTP port targets, at the pod's address, handing every
// RPC to the application (non-forwarding), requiring mTLS where the port
// is STRICT and the workload has certificates (mtls: pod certificates,
// which its bootstrap's certificate provider reads).
func serverListeners(sh *Shared, ports []PodPort, mtls bool, reg decoded) ([]*listenerv3.Listener, error) {
	var out []*listenerv3.Listener
	for _, pp := range ports {
		if !pp.Service.Protocol.IsHTTP() || pp.Address == "" {
			continue
		}
		addr := net.JoinHostPort(pp.Address, strconv.Itoa(int(pp.Number)))
		cfg, err := reg.pack(&hcmv3.HttpConnectionManager{
			StatPrefix: "inbound|" + strconv.Itoa(int(pp.Number)),
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
				Name: "inbound|" + strconv.Itoa(int(pp.Number)),
				VirtualHosts: []*routev3.VirtualHost{{Name: "inbound", Domains: []string{"*"}, Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}}}},
			}},
			HttpFilters: httpFilters(sh.allowFor(pp, true)),
		})
		if err != nil {
			return nil, err
		}
		chain := &listenerv3.FilterChain{
			Name: "inbound|" + strconv.Itoa(int(pp.Number)),
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}},
		}
		if mtls && pp.MTLS == meshv1.MTLSStrict {
			chain.TransportSocket = downstreamTLS
		}
		out = append(out, &listenerv3.Listener{
			Name:         wire.ServerListenerName(addr),
			Address:      socketAddress(pp.Address, pp.Number),
			FilterChains: []*listenerv3.FilterChain{chain},
		})
	}
	return out, nil
}
