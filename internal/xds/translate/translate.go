// Package translate turns the mesh model into xDS resources for one proxy.
// Every function here is pure: the same model and proxy give the same
// resources, which are validated (ValidateAll) and checked for dangling
// references before they are returned.
package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Proxy is the proxy being configured.
type Proxy struct {
	ID        string
	Namespace string
	Flavour   wire.Flavour
	// Pod is "<namespace>/<name>" of the proxy's pod (Envoy sidecars): its
	// endpoints get inbound filter chains.
	Pod string
}

// Resources are one proxy's resources by type, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets are a sidecar's own certificate and trusted roots (SDS);
	// nil for sets that carry none.
	Secrets []*tlsv3.Secret
}

// ErrDangling is returned when a resource names one that is not there.
var ErrDangling = errors.New("dangling reference")

// ClusterName names the cluster of a service port and subset ("" for all
// endpoints).
func ClusterName(s *mesh.Service, p mesh.Port, subset string) string {
	return "outbound|" + strconv.Itoa(int(p.Number)) + "|" + subset + "|" + s.Host
}

// ListenerName is what a gRPC client asks for with target xds:///<name>.
func ListenerName(s *mesh.Service, p mesh.Port) string {
	return s.Host + ":" + strconv.Itoa(int(p.Number))
}

// Shared holds what every proxy of one flavour gets from a model. It is
// built and validated once per model; proxies share its objects, and the
// cache recognises an unchanged object by identity.
type Shared struct {
	// GRPC is the whole proxyless set: api listeners, routes, clusters and
	// endpoints of the gRPC and HTTP ports.
	GRPC *Resources
	// Envoy holds the outbound listener, routes, clusters and endpoints of
	// every port; each sidecar adds its inbound listener and clusters.
	Envoy *Resources
	// inbound lists, per pod ("<namespace>/<name>"), its ports that mesh
	// services target; built the first time a sidecar needs it.
	inbound     map[string][]PodPort
	inboundOnce sync.Once
	model       *mesh.Model
	// envoyNames indexes Envoy's names, to check a sidecar's own
	// resources against.
	envoyNames *names
	// services keeps what each service translated to, for the next model.
	services map[string]*serviceOut
	opts     Options
}

// serviceOut is what one service translates to.
type serviceOut struct {
	svc *mesh.Service
	// api holds the api listeners of its HTTP ports (proxyless gRPC);
	// http their routes, clusters and endpoints (both flavours); tcp the
	// clusters and endpoints of its other ports and chains its outbound
	// filter chains (Envoy).
	api, http, tcp Resources
	// grpcHTTP is http as proxyless gRPC gets it, envoyHTTP and envoyTCP
	// http and tcp as sidecars get them: the same, or with TLS copies of
	// the clusters whose endpoints take mTLS.
	grpcHTTP, envoyHTTP, envoyTCP Resources
	chains                        []*listenerv3.FilterChain
	// decoded keeps the messages behind its filters' configuration.
	decoded decoded
}

// BuildShared translates what proxies share. A service equal to its
// version in prev keeps prev's resources, and a changed one keeps prev's
// object for every resource that came out equal, so that a model change
// costs, and touches, only what changed.
func BuildShared(m *mesh.Model, prev *Shared) (*Shared, error) {
	return BuildSharedWith(m, prev, Options{})
}

// BuildSharedWith is BuildShared with options; prev is reused only when it
// was built with the same ones.
func BuildSharedWith(m *mesh.Model, prev *Shared, opts Options) (*Shared, error) {
	if prev != nil && prev.opts != opts {
		prev = nil
	}
	sh := &Shared{GRPC: &Resources{}, Envoy: &Resources{}, model: m, services: make(map[string]*serviceOut, len(m.Order)), opts: opts}
	g, e := sh.GRPC, sh.Envoy
	for _, key := range m.Order {
		s := m.Services[key]
		var old *serviceOut
		if prev != nil {
			old = prev.services[key]
		}
		out := old
		if old == nil || !old.svc.Equal(s) {
			var err error
			if out, err = translateService(s, old, opts); err != nil {
				return nil, fmt.Errorf("service %s: %w", key, err)
			}
		}
		sh.services[key] = out
		g.add(&out.api)
		g.add(&out.grpcHTTP)
		e.add(&out.envoyHTTP)
		e.add(&out.envoyTCP)
	}
	var prevOut *listenerv3.Listener
	if prev != nil {
		prevOut = prev.outbound()
	}
	// Each service's references were checked when it was translated;
	// the outbound listener names every service's.
	sh.envoyNames = namesOf(e)
	if err := addOutbound(sh, prevOut, e); err != nil {
		return nil, err
	}
	if c := opts.Observe.tracingCluster(); c != nil {
		if err := c.ValidateAll(); err != nil {
			return nil, fmt.Errorf("the tracing cluster: %w", err)
		}
		e.Clusters = append(e.Clusters, c)
	}
	return sh, nil
}

// outbound is the shared outbound listener.
func (sh *Shared) outbound() *listenerv3.Listener {
	for _, l := range sh.Envoy.Listeners {
		if l.Name == OutboundListener {
			return l
		}
	}
	return nil
}

func (r *Resources) add(o *Resources) {
	r.Listeners = append(r.Listeners, o.Listeners...)
	r.Routes = append(r.Routes, o.Routes...)
	r.Clusters = append(r.Clusters, o.Clusters...)
	r.Endpoints = append(r.Endpoints, o.Endpoints...)
}

// translateService translates one service and validates the result,
// keeping old's object for every resource that came out equal.
func translateService(s *mesh.Service, old *serviceOut, opts Options) (*serviceOut, error) {
	out := &serviceOut{svc: s, decoded: decoded{}}
	for _, p := range s.Ports {
		r := &out.tcp
		if p.Protocol.IsHTTP() {
			r = &out.http
			rc := routeConfig(ListenerName(s, p), s, p)
			lis, err := apiListener(ListenerName(s, p), out.decoded)
			if err != nil {
				return nil, fmt.Errorf("port %d: %w", p.Number, err)
			}
			r.Routes, out.api.Listeners = append(r.Routes, rc), append(out.api.Listeners, lis)
		}
		addClusters(r, s, p)
		if len(s.ClusterIPs) > 0 {
			chain, err := outboundChain(s, p, opts.Observe, out.decoded)
			if err != nil {
				return nil, fmt.Errorf("port %d: %w", p.Number, err)
			}
			out.chains = append(out.chains, chain)
		}
	}
	if old != nil {
		reuse(&out.api, &old.api)
		reuse(&out.http, &old.http)
		reuse(&out.tcp, &old.tcp)
		for i, c := range out.chains {
			if j := slices.IndexFunc(old.chains, func(o *listenerv3.FilterChain) bool { return o.Name == c.Name }); j >= 0 && proto.Equal(old.chains[j], c) {
				out.chains[i] = old.chains[j]
			}
		}
	}
	out.grpcHTTP, out.envoyHTTP, out.envoyTCP = out.http, out.http, out.tcp
	if tls := clusterTLS(s); tls != nil {
		if opts.ProxylessMTLS {
			out.grpcHTTP.Clusters = withTLS(out.http.Clusters, tls, upstreamTLS)
		}
		if opts.EnvoyCerts != EnvoyCertsNone {
			socket := func(ids []string) *corev3.TransportSocket { return envoyUpstreamTLS(opts.EnvoyCerts, ids) }
			out.envoyHTTP.Clusters = withTLS(out.http.Clusters, tls, socket)
			out.envoyTCP.Clusters = withTLS(out.tcp.Clusters, tls, socket)
		}
	}
	was := old.orEmpty()
	if old != nil {
		for _, l := range []struct{ now, before []*clusterv3.Cluster }{
			{out.grpcHTTP.Clusters, old.grpcHTTP.Clusters}, {out.envoyHTTP.Clusters, old.envoyHTTP.Clusters}, {out.envoyTCP.Clusters, old.envoyTCP.Clusters},
		} {
			reuseList(l.now, l.before, (*clusterv3.Cluster).GetName)
		}
	}
	known := slices.Concat(was.grpcHTTP.Clusters, was.envoyHTTP.Clusters, was.envoyTCP.Clusters, out.http.Clusters, out.tcp.Clusters)
	if err := errors.Join(out.api.validateNew(&was.api), out.http.validateNew(&was.http), out.tcp.validateNew(&was.tcp),
		validateNewList(out.grpcHTTP.Clusters, known), validateNewList(out.envoyHTTP.Clusters, known), validateNewList(out.envoyTCP.Clusters, known)); err != nil {
		return nil, err
	}
	// A service's resources name only each other.
	var all Resources
	all.add(&out.api)
	all.add(&out.http)
	all.add(&out.tcp)
	if err := all.checkRefs(nil, out.decoded); err != nil {
		return nil, err
	}
	return out, nil
}

func (o *serviceOut) orEmpty() *serviceOut {
	if o == nil {
		return &serviceOut{}
	}
	return o
}

// validateNew runs ValidateAll on every resource that is not one of
// old's objects (those passed already).
func (r *Resources) validateNew(old *Resources) error {
	return errors.Join(validateNewList(r.Listeners, old.Listeners), validateNewList(r.Routes, old.Routes),
		validateNewList(r.Clusters, old.Clusters), validateNewList(r.Endpoints, old.Endpoints))
}

func validateNewList[T interface {
	comparable
	ValidateAll() error
}](list, old []T) error {
	var errs []error
	for _, x := range list {
		if !slices.Contains(old, x) {
			errs = append(errs, x.ValidateAll())
		}
	}
	return errors.Join(errs...)
}

// PodPort is a port of a pod that a mesh service port targets.
type PodPort struct {
	Number  int32
	Service mesh.Port
	// Address is the pod's address; MTLS its mode on the port.
	Address string
	MTLS    meshv1.MTLSMode
	// Owner is the key of the service whose port this is, and Generation
	// that MeshService's (its allow rules are translated from it).
	Owner      string
	Generation int64
}

// InboundPorts returns the ports of a pod ("<namespace>/<name>") that mesh
// services target, by number: all that a sidecar's own resources are made
// from. (When two service ports target one pod port, the first in service
// order serves it.)
func (sh *Shared) InboundPorts(pod string) []PodPort {
	sh.inboundOnce.Do(func() {
		sh.inbound = map[string][]PodPort{}
		for _, key := range sh.model.Order {
			s := sh.model.Services[key]
			for _, p := range s.Ports {
				for _, e := range s.Endpoints {
					port, ok := e.PortOf(p)
					if e.Pod == "" || !ok {
						continue
					}
					ports := sh.inbound[e.Pod]
					i, found := slices.BinarySearchFunc(ports, port, func(ip PodPort, n int32) int { return cmp.Compare(ip.Number, n) })
					if !found {
						sh.inbound[e.Pod] = slices.Insert(ports, i, PodPort{Number: port, Service: p, Address: e.Address, MTLS: e.ModeFor(port),
							Owner: key, Generation: s.Generation})
					}
				}
			}
		}
	})
	return sh.inbound[pod]
}

// reuse swaps in prev's object for every resource equal to it.
func reuse(r, prev *Resources) {
	reuseList(r.Listeners, prev.Listeners, (*listenerv3.Listener).GetName)
	reuseList(r.Routes, prev.Routes, (*routev3.RouteConfiguration).GetName)
	reuseList(r.Clusters, prev.Clusters, (*clusterv3.Cluster).GetName)
	reuseList(r.Endpoints, prev.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
}

func reuseList[T proto.Message](list, prev []T, name func(T) string) {
	for i, x := range list {
		for _, o := range prev {
			if name(o) == name(x) && proto.Equal(o, x) {
				list[i] = o
				break
			}
		}
	}
}

func validateAll[T interface{ ValidateAll() error }](lists ...[]T) error {
	var errs []error
	for _, l := range lists {
		for _, x := range l {
			errs = append(errs, x.ValidateAll())
		}
	}
	return errors.Join(errs...)
}

// Own returns what a proxy has beyond its flavour's shared set: for an
// Envoy sidecar, its inbound listener and clusters; nothing for proxyless
// gRPC. They are validated, with every reference they make.
func Own(sh *Shared, proxy Proxy) (*Resources, error) {
	switch proxy.Flavour {
	case wire.FlavourGRPC:
		// A gRPC server's Listeners (a client asks for none of them).
		lis, err := serverListeners(sh, sh.InboundPorts(proxy.Pod), decoded{})
		if err == nil {
			err = validateAll(lis)
		}
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		return &Resources{Listeners: lis}, nil
	case wire.FlavourEnvoy:
		r, reg := &Resources{}, decoded{}
		if err := addInbound(sh, sh.InboundPorts(proxy.Pod), r, reg); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		if err := errors.Join(validateAll(r.Listeners), validateAll(r.Clusters), r.checkRefs(sh.envoyNames, reg)); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("proxy %s: unknown flavour %q", proxy.ID, proxy.Flavour)
}

// ForProxy returns all of one proxy's resources, shared and its own, each
// list sorted by name. The shared objects must not be changed.
func ForProxy(sh *Shared, proxy Proxy) (*Resources, error) {
	own, err := Own(sh, proxy)
	if err != nil {
		return nil, err
	}
	base := sh.GRPC
	if proxy.Flavour == wire.FlavourEnvoy {
		base = sh.Envoy
	}
	return &Resources{
		Listeners: sortedBy(append(slices.Clone(base.Listeners), own.Listeners...), (*listenerv3.Listener).GetName),
		Routes:    sortedBy(append(slices.Clone(base.Routes), own.Routes...), (*routev3.RouteConfiguration).GetName),
		Clusters:  sortedBy(append(slices.Clone(base.Clusters), own.Clusters...), (*clusterv3.Cluster).GetName),
		Endpoints: sortedBy(append(slices.Clone(base.Endpoints), own.Endpoints...), (*endpointv3.ClusterLoadAssignment).GetClusterName),
	}, nil
}

func sortedBy[T any](xs []T, name func(T) string) []T {
	slices.SortStableFunc(xs, func(a, b T) int { return strings.Compare(name(a), name(b)) })
	return xs
}

// Translate builds the resources of one proxy from scratch.
func Translate(m *mesh.Model, proxy Proxy) (*Resources, error) {
	return TranslateWith(m, proxy, Options{})
}

// TranslateWith is Translate with options.
func TranslateWith(m *mesh.Model, proxy Proxy, opts Options) (*Resources, error) {
	sh, err := BuildSharedWith(m, nil, opts)
	if err != nil {
		return nil, err
	}
	return ForProxy(sh, proxy)
}

// addClusters adds a service port's EDS clusters and endpoints: one for all
// endpoints and one per subset.
func addClusters(r *Resources, s *mesh.Service, p mesh.Port) {
	subsets := []string{""}
	for _, sub := range s.Subsets {
		subsets = append(subsets, sub.Name)
	}
	// Each endpoint is made once and shared by every subset it is in.
	lbs := lbEndpoints(s, p)
	for _, sub := range subsets {
		cn := ClusterName(s, p, sub)
		r.Clusters = append(r.Clusters, edsCluster(cn, p))
		r.Endpoints = append(r.Endpoints, loadAssignment(cn, s, sub, lbs))
	}
}

var adsSource = &corev3.ConfigSource{
	ResourceApiVersion:    corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
}

// Fixed configuration, marshaled once. Resources share these objects, which
// must not be changed.
var (
	routerFilter  = mustAny(&routerv3.Router{})
	http2Upstream = mustAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
)

// http2Options is every HTTP/2 cluster's protocol options: one map, shared
// and never changed.
var http2Options = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2Upstream}

// mustAny wraps a fixed message, which always marshals.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func apiListener(name string, reg decoded) (*listenerv3.Listener, error) {
	hcm, err := reg.pack(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource, RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: routerFilter}}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}, nil
}

func routeConfig(name string, s *mesh.Service, p mesh.Port) *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, rt := range s.Routes {
		action := weighted(s, p, rt.Backends)
		matches := rt.Matches
		if len(matches) == 0 {
			matches = []meshv1.HTTPMatch{{}}
		}
		for _, m := range matches {
			routes = append(routes, &routev3.Route{Name: rt.Name, Match: routeMatch(m), Action: action})
		}
	}
	// What no route matches goes to all endpoints.
	routes = append(routes, &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(s, p, "")}}},
	})
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: domains(s, p),
			Routes:  routes,
		}},
	}
}

func weighted(s *mesh.Service, p mesh.Port, backends []meshv1.WeightedBackend) *routev3.Route_Route {
	var wc []*routev3.WeightedCluster_ClusterWeight
	for _, b := range backends {
		if b.Weight == 0 {
			continue // grpc-go drops weight-0 entries; so do we
		}
		wc = append(wc, &routev3.WeightedCluster_ClusterWeight{Name: ClusterName(s, p, b.Subset), Weight: wrapperspb.UInt32(uint32(b.Weight))})
	}
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: wc},
	}}}
}

func routeMatch(m meshv1.HTTPMatch) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m.Path != nil {
		switch m.Path.Type {
		case meshv1.MatchExact:
			rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.Path.Value}
		case meshv1.MatchRegularExpression:
			rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.Path.Value}}
		default:
			rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: m.Path.Value}
		}
	}
	for _, h := range m.Headers {
		hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
		switch h.Type {
		case meshv1.HeaderMatchPresent:
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		case meshv1.HeaderMatchPrefix:
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: deref(h.Value)}})
		case meshv1.HeaderMatchRegularExpression:
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: deref(h.Value)}}})
		default:
			hm.HeaderMatchSpecifier = stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: deref(h.Value)}})
		}
		rm.Headers = append(rm.Headers, hm)
	}
	if m.Method != nil {
		rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: string(*m.Method)}})})
	}
	return rm
}

func stringMatch(sm *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
	return &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
}

func edsCluster(name string, p mesh.Port) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource, ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
	setUpstreamProtocol(c, p)
	return c
}

// setUpstreamProtocol makes Envoy speak HTTP/2 to endpoints of grpc and
// http2 ports (it speaks HTTP/1.1 otherwise). grpc-go ignores the option.
func setUpstreamProtocol(c *clusterv3.Cluster, p mesh.Port) {
	if p.Protocol != meshv1.ProtocolGRPC && p.Protocol != meshv1.ProtocolHTTP2 {
		return
	}
	c.TypedExtensionProtocolOptions = http2Options
}

// lbEndpoints makes the service's endpoints for a port, by endpoint index
// (nil where an endpoint lacks the port): ready ones HEALTHY, terminating
// ones DRAINING, so that clients stop opening new streams to them without
// cutting those in flight. The messages of all endpoints are allocated
// together, a handful of allocations instead of seven per endpoint.
func lbEndpoints(s *mesh.Service, p mesh.Port) []*endpointv3.LbEndpoint {
	n := len(s.Endpoints)
	out := make([]*endpointv3.LbEndpoint, n)
	lbs := make([]endpointv3.LbEndpoint, n)
	hosts := make([]endpointv3.LbEndpoint_Endpoint, n)
	eps := make([]endpointv3.Endpoint, n)
	addrs := make([]corev3.Address, n)
	socks := make([]corev3.Address_SocketAddress, n)
	sas := make([]corev3.SocketAddress, n)
	ports := make([]corev3.SocketAddress_PortValue, n)
	for i, e := range s.Endpoints {
		port, ok := e.PortOf(p)
		if !ok {
			continue
		}
		ports[i].PortValue = uint32(port)
		sas[i].Address, sas[i].PortSpecifier = e.Address, &ports[i]
		socks[i].SocketAddress = &sas[i]
		addrs[i].Address = &socks[i]
		eps[i].Address = &addrs[i]
		hosts[i].Endpoint = &eps[i]
		lbs[i].HostIdentifier = &hosts[i]
		lbs[i].HealthStatus = corev3.HealthStatus_HEALTHY
		if !e.Ready {
			lbs[i].HealthStatus = corev3.HealthStatus_DRAINING
		}
		out[i] = &lbs[i]
	}
	return out
}

// loadAssignment lists a subset's endpoints (lbs, by the service's
// endpoint index; nil where an endpoint lacks the port), grouped into one
// locality per zone, weighted by its number of endpoints, so that load
// stays even per endpoint. (grpc-go refuses a locality without an ID and
// ignores one without a weight.)
func loadAssignment(name string, s *mesh.Service, subset string, lbs []*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	picked := make([]int, 0, len(s.Endpoints))
	for i, e := range s.Endpoints {
		if lbs[i] != nil && s.InSubset(e, subset) {
			picked = append(picked, i)
		}
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(picked) == 0 {
		return cla
	}
	// Endpoints are sorted by address; keep that order within each zone
	// (most services have one zone, and need no sorting).
	zone := s.Endpoints[picked[0]].Zone
	if slices.ContainsFunc(picked, func(i int) bool { return s.Endpoints[i].Zone != zone }) {
		slices.SortStableFunc(picked, func(a, b int) int { return strings.Compare(s.Endpoints[a].Zone, s.Endpoints[b].Zone) })
	}
	for start := 0; start < len(picked); {
		zone := s.Endpoints[picked[start]].Zone
		end := start
		for end < len(picked) && s.Endpoints[picked[end]].Zone == zone {
			end++
		}
		group := make([]*endpointv3.LbEndpoint, 0, end-start)
		for _, i := range picked[start:end] {
			group = append(group, lbs[i])
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Zone: zone},
			LbEndpoints:         group,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(group))),
		})
		start = end
	}
	return cla
}

// Validate runs each resource's ValidateAll and checks every reference.
func (r *Resources) Validate() error {
	return errors.Join(validateAll(r.Listeners), validateAll(r.Routes), validateAll(r.Clusters),
		validateAll(r.Endpoints), r.checkRefs(nil, nil))
}

// names indexes the names of resources that others refer to.
type names struct {
	routes, clusters, clas map[string]bool
}

func namesOf(r *Resources) *names {
	n := &names{routes: map[string]bool{}, clusters: map[string]bool{}, clas: map[string]bool{}}
	for _, x := range r.Routes {
		n.routes[x.Name] = true
	}
	for _, x := range r.Clusters {
		n.clusters[x.Name] = true
	}
	for _, x := range r.Endpoints {
		n.clas[x.ClusterName] = true
	}
	return n
}

// checkRefs checks that every name a resource uses exists, among r's own
// resources or those of also (nil for none): route configurations named by
// listeners (through api_listener or filter chains), clusters named by
// routes and TCP proxies, and endpoints for every EDS cluster.
func (r *Resources) checkRefs(also *names, reg decoded) error {
	var errs []error
	own := namesOf(r)
	if also == nil {
		also = &names{}
	}
	needCluster := func(owner, c string) {
		if !own.clusters[c] && !also.clusters[c] {
			errs = append(errs, fmt.Errorf("%w: %s names cluster %s", ErrDangling, owner, c))
		}
	}
	checkRouteConfig := func(owner string, rc *routev3.RouteConfiguration) {
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				for _, c := range routeClusters(rt) {
					needCluster(owner, c)
				}
			}
		}
	}
	checkHCM := func(owner string, cfg *anypb.Any) {
		m, err := unpack(reg, cfg, &hcmv3.HttpConnectionManager{})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", owner, err))
			return
		}
		if rds := m.GetRds(); rds != nil && !own.routes[rds.GetRouteConfigName()] && !also.routes[rds.GetRouteConfigName()] {
			errs = append(errs, fmt.Errorf("%w: %s names route configuration %s", ErrDangling, owner, rds.GetRouteConfigName()))
		}
		if rc := m.GetRouteConfig(); rc != nil {
			checkRouteConfig(owner, rc)
		}
	}
	for _, x := range r.Listeners {
		owner := "listener " + x.Name
		if api := x.GetApiListener(); api != nil {
			checkHCM(owner, api.GetApiListener())
		}
		for _, fc := range append(slices.Clone(x.GetFilterChains()), x.GetDefaultFilterChain()) {
			for _, f := range fc.GetFilters() {
				switch cfg := f.GetTypedConfig(); {
				case cfg.MessageIs(&hcmv3.HttpConnectionManager{}):
					checkHCM(owner, cfg)
				case cfg.MessageIs(&tcpproxyv3.TcpProxy{}):
					tp, err := unpack(reg, cfg, &tcpproxyv3.TcpProxy{})
					if err != nil {
						errs = append(errs, err)
						continue
					}
					needCluster(owner, tp.GetCluster())
				}
			}
		}
	}
	for _, rc := range r.Routes {
		checkRouteConfig("route configuration "+rc.Name, rc)
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !own.clas[c.Name] && !also.clas[c.Name] {
			errs = append(errs, fmt.Errorf("%w: cluster %s has no endpoints resource", ErrDangling, c.Name))
		}
	}
	return errors.Join(errs...)
}

func routeClusters(rt *routev3.Route) []string {
	a := rt.GetRoute()
	if a == nil {
		return nil
	}
	if c := a.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, w := range a.GetWeightedClusters().GetClusters() {
		out = append(out, w.Name)
	}
	return slices.Compact(out)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
