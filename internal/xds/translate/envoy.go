package translate

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Names of the Envoy flavour's own resources.
const (
	OutboundListener = "weft-outbound"
	InboundListener  = "weft-inbound"
	// PassthroughCluster forwards to the original destination: traffic to
	// anything that is not a mesh service leaves as it came.
	PassthroughCluster = "weft-passthrough"
)

// InboundClusterName names the cluster that hands inbound traffic for a
// port to the application over loopback.
func InboundClusterName(port int32) string { return "inbound|" + strconv.Itoa(int(port)) }

// addOutbound adds what every sidecar shares: the outbound listener on
// 15001, with one filter chain per service port matched on the service's
// cluster IPs and port, and the passthrough cluster for everything else.
// When every chain is prev's, prev's listener serves again; a new one is
// validated and its references checked against r (every chain names a
// route configuration or cluster of r) and sh.envoyNames.
func addOutbound(sh *Shared, prev *listenerv3.Listener, r *Resources) error {
	var chains []*listenerv3.FilterChain
	for _, out := range sh.services {
		chains = append(chains, out.chains...)
	}
	slices.SortFunc(chains, func(a, b *listenerv3.FilterChain) int { return strings.Compare(a.Name, b.Name) })
	lis := prev
	if prev == nil || !slices.Equal(prev.FilterChains, chains) {
		passthrough, err := tcpProxy("passthrough", PassthroughCluster, sh.opts.Observe, nil)
		if err != nil {
			return err
		}
		lis = &listenerv3.Listener{
			Name:               OutboundListener,
			Address:            socketAddress("0.0.0.0", wire.PortOutbound),
			ListenerFilters:    []*listenerv3.ListenerFilter{originalDst()},
			FilterChains:       chains,
			DefaultFilterChain: &listenerv3.FilterChain{Name: "passthrough", Filters: []*listenerv3.Filter{passthrough}},
		}
		r.Clusters = append(r.Clusters, passthroughCluster)
		sh.envoyNames.clusters[PassthroughCluster] = true
		if err := errors.Join(lis.ValidateAll(), (&Resources{Listeners: []*listenerv3.Listener{lis}}).checkRefs(sh.envoyNames, sh.chainConfigs())); err != nil {
			return err
		}
	} else {
		r.Clusters = append(r.Clusters, passthroughCluster)
		sh.envoyNames.clusters[PassthroughCluster] = true
	}
	r.Listeners = append(r.Listeners, lis)
	return nil
}

// passthroughCluster forwards to the original destination. It never
// changes, so one object serves every model.
var passthroughCluster = &clusterv3.Cluster{
	Name:                 PassthroughCluster,
	ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
	LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	ConnectTimeout:       durationpb.New(5 * time.Second),
}

// addInbound adds a sidecar's own listener on 15006, with one filter chain
// per port of its pod that a mesh service targets, each handing traffic to
// the application over loopback through a cluster of its own.
func addInbound(sh *Shared, inPorts []PodPort, r *Resources, reg decoded) error {
	certs := sh.opts.EnvoyCerts
	var chains []*listenerv3.FilterChain
	for _, ip := range inPorts {
		port, p := ip.Number, ip.Service
		cluster := InboundClusterName(port)
		local := staticLoopbackCluster(cluster, port)
		setUpstreamProtocol(local, p)
		r.Clusters = append(r.Clusters, local)
		var filters []*listenerv3.Filter
		if p.Protocol.IsHTTP() {
			filter, err := inboundHTTP(cluster, sh.allowFor(ip, true), sh.rateLimitFor(ip), sh.opts.Observe, reg)
			if err != nil {
				return err
			}
			filters = append(filters, filter)
		} else {
			if rules := sh.allowFor(ip, false); rules != nil {
				cfg, err := reg.pack(networkRBAC(cluster, rules))
				if err != nil {
					return err
				}
				filters = append(filters, &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}})
			}
			filter, err := tcpProxy(cluster, cluster, sh.opts.Observe, reg)
			if err != nil {
				return err
			}
			filters = append(filters, filter)
		}
		portChains := inboundChains(&listenerv3.FilterChain{
			Name:             cluster,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(port))},
			Filters:          filters,
		}, ip.MTLS, certs)
		chains = append(chains, portChains...)
	}
	passthrough, err := tcpProxy("inbound-passthrough", PassthroughCluster, sh.opts.Observe, reg)
	if err != nil {
		return err
	}
	filters := []*listenerv3.ListenerFilter{originalDst()}
	r.Listeners = append(r.Listeners, &listenerv3.Listener{
		Name:               InboundListener,
		Address:            socketAddress("0.0.0.0", wire.PortInbound),
		ListenerFilters:    filters,
		FilterChains:       chains,
		DefaultFilterChain: &listenerv3.FilterChain{Name: "inbound-passthrough", Filters: []*listenerv3.Filter{passthrough}},
	})
	return nil
}

// outboundChain matches connections to a service port's cluster IPs.
func outboundChain(s *mesh.Service, p mesh.Port, obs Observability, reg decoded) (*listenerv3.FilterChain, error) {
	match := &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(p.Number))}
	for _, ip := range s.ClusterIPs {
		bits := uint32(32)
		if strings.Contains(ip, ":") {
			bits = 128
		}
		match.PrefixRanges = append(match.PrefixRanges, &corev3.CidrRange{AddressPrefix: ip, PrefixLen: wrapperspb.UInt32(bits)})
	}
	var filter *listenerv3.Filter
	var err error
	if p.Protocol.IsHTTP() {
		filter, err = rdsHTTP(ListenerName(s, p), hasFault(s, p), obs, reg)
	} else {
		filter, err = tcpProxy(ClusterName(s, p, ""), ClusterName(s, p, ""), obs, reg)
	}
	if err != nil {
		return nil, err
	}
	return &listenerv3.FilterChain{Name: ListenerName(s, p), FilterChainMatch: match, Filters: []*listenerv3.Filter{filter}}, nil
}

var originalDstFilter = mustAny(&originaldstv3.OriginalDst{})

func originalDst() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: originalDstFilter}}
}

func tcpProxy(statPrefix, cluster string, obs Observability, reg decoded) (*listenerv3.Filter, error) {
	cfg, err := reg.pack(&tcpproxyv3.TcpProxy{StatPrefix: statPrefix, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
		AccessLog: obs.accessLogs()})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

// hcm wraps an HTTP connection manager into a network filter; the codec is
// detected, so gRPC and http2 callers speak HTTP/2 to the proxy.
func hcm(m *hcmv3.HttpConnectionManager, reg decoded) (*listenerv3.Filter, error) {
	if m.HttpFilters == nil {
		m.HttpFilters = httpFilters(nil)
	}
	m.CodecType = hcmv3.HttpConnectionManager_AUTO
	cfg, err := reg.pack(m)
	if err != nil {
		return nil, err
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}, nil
}

func rdsHTTP(route string, fault bool, obs Observability, reg decoded) (*listenerv3.Filter, error) {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:     route,
		HttpFilters:    clientFilters(fault),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: adsSource, RouteConfigName: route}},
	}
	obs.observe(m, route)
	return hcm(m, reg)
}

// inboundHTTP hands every request for a port to the application: after
// the allow rules, when there are any, and the rate limit, when rl is set
// (so that callers the rules refuse spend none of the bucket).
func inboundHTTP(cluster string, rules *rbacv3.RBAC, rl *meshv1.LocalRateLimit, obs Observability, reg decoded) (*listenerv3.Filter, error) {
	filters := httpFilters(rules)
	if rl != nil {
		f, err := rateLimitFilter(cluster, rl, reg)
		if err != nil {
			return nil, err
		}
		filters = slices.Insert(filters, len(filters)-1, f)
	}
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:  cluster,
		HttpFilters: filters,
		// Allow rules match paths: compare and forward the path the
		// application will see ("/a/../b" is "/b", "//" is "/", an escaped
		// slash is refused).
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_REJECT_REQUEST,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: cluster,
			VirtualHosts: []*routev3.VirtualHost{{Name: cluster, Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
			}}}},
		}},
	}
	obs.observe(m, cluster)
	return hcm(m, reg)
}

func staticLoopbackCluster(name string, port int32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
				Endpoint: &endpointv3.Endpoint{Address: socketAddress("127.0.0.1", port)},
			}}},
		}}},
	}
}

func socketAddress(host string, port int32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}
}

// domains are the names a request for a service port may carry as its
// host: the full name and its shorter forms, and the cluster IPs, each with
// and without the port.
func domains(s *mesh.Service, p mesh.Port) []string {
	port := strconv.Itoa(int(p.Number))
	var out []string
	for _, n := range []string{s.Host, s.ServiceName + "." + s.Namespace + ".svc", s.ServiceName + "." + s.Namespace, s.ServiceName} {
		out = append(out, n+":"+port, n)
	}
	for _, ip := range s.ClusterIPs {
		bare := ip
		if strings.Contains(ip, ":") {
			bare = "[" + ip + "]"
		}
		out = append(out, net.JoinHostPort(ip, port), bare)
	}
	return slices.Compact(out)
}
