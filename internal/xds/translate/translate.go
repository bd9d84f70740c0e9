// Package translate turns the mesh model into xDS resources for one proxy.
// Every function here is pure: the same model and proxy give the same
// resources, which are validated (ValidateAll) and checked for dangling
// references before they are returned.
package translate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// Flavour is the kind of proxy.
type Flavour string

const (
	// FlavourGRPC is a proxyless gRPC client (api_listener listeners).
	FlavourGRPC Flavour = "grpc"
)

// Proxy is the proxy being configured.
type Proxy struct {
	ID        string
	Namespace string
	Flavour   Flavour
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
	// Envoy holds the routes, clusters and endpoints of every port; each
	// sidecar adds its own listeners.
	Envoy *Resources
}

// BuildShared translates what proxies share. Resources equal to one in
// prev keep prev's object, so that a model change touches only what
// changed.
func BuildShared(m *mesh.Model, prev *Shared) (*Shared, error) {
	g, e := &Resources{}, &Resources{}
	for _, key := range m.Order {
		s := m.Services[key]
		for _, p := range s.Ports {
			var port Resources
			addClusters(&port, s, p)
			e.Clusters, e.Endpoints = append(e.Clusters, port.Clusters...), append(e.Endpoints, port.Endpoints...)
			if !p.Protocol.IsHTTP() {
				continue // proxyless gRPC speaks gRPC only; Envoy carries tcp ports too
			}
			rc := routeConfig(ListenerName(s, p), s, p)
			lis, err := apiListener(ListenerName(s, p))
			if err != nil {
				return nil, fmt.Errorf("service %s port %d: %w", key, p.Number, err)
			}
			g.Clusters, g.Endpoints = append(g.Clusters, port.Clusters...), append(g.Endpoints, port.Endpoints...)
			g.Routes, e.Routes = append(g.Routes, rc), append(e.Routes, rc)
			g.Listeners = append(g.Listeners, lis)
		}
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if err := errors.Join(validateAll(e.Clusters), validateAll(e.Endpoints)); err != nil {
		return nil, err
	}
	if prev != nil {
		reuse(g, prev.GRPC)
		reuse(e, prev.Envoy)
	}
	return &Shared{GRPC: g, Envoy: e}, nil
}

// reuse swaps in prev's object for every resource equal to it.
func reuse(r, prev *Resources) {
	if prev == nil {
		return
	}
	reuseList(r.Listeners, prev.Listeners, (*listenerv3.Listener).GetName)
	reuseList(r.Routes, prev.Routes, (*routev3.RouteConfiguration).GetName)
	reuseList(r.Clusters, prev.Clusters, (*clusterv3.Cluster).GetName)
	reuseList(r.Endpoints, prev.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
}

func reuseList[T proto.Message](list, prev []T, name func(T) string) {
	old := make(map[string]T, len(prev))
	for _, x := range prev {
		old[name(x)] = x
	}
	for i, x := range list {
		if o, ok := old[name(x)]; ok && proto.Equal(o, x) {
			list[i] = o
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

// ForProxy returns one proxy's resources: the shared set of its flavour,
// and for an Envoy sidecar its own listeners and inbound clusters. The
// shared objects must not be changed.
func ForProxy(sh *Shared, m *mesh.Model, proxy Proxy) (*Resources, error) {
	switch proxy.Flavour {
	case FlavourGRPC:
		return sh.GRPC, nil
	case FlavourEnvoy:
		r := &Resources{
			Routes:    slices.Clone(sh.Envoy.Routes),
			Clusters:  slices.Clone(sh.Envoy.Clusters),
			Endpoints: slices.Clone(sh.Envoy.Endpoints),
		}
		shared := len(r.Clusters)
		if err := translateEnvoy(m, proxy, r); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		// The shared part is validated already; check the proxy's own
		// resources and every reference.
		if err := errors.Join(validateAll(r.Listeners), validateAll(r.Clusters[shared:]), r.checkRefs()); err != nil {
			return nil, fmt.Errorf("proxy %s: %w", proxy.ID, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("proxy %s: unknown flavour %q", proxy.ID, proxy.Flavour)
}

// Translate builds the resources of one proxy from scratch.
func Translate(m *mesh.Model, proxy Proxy) (*Resources, error) {
	sh, err := BuildShared(m, nil)
	if err != nil {
		return nil, err
	}
	return ForProxy(sh, m, proxy)
}

// addClusters adds a service port's EDS clusters and endpoints: one for all
// endpoints and one per subset.
func addClusters(r *Resources, s *mesh.Service, p mesh.Port) {
	subsets := []string{""}
	for _, sub := range s.Subsets {
		subsets = append(subsets, sub.Name)
	}
	for _, sub := range subsets {
		cn := ClusterName(s, p, sub)
		r.Clusters = append(r.Clusters, edsCluster(cn, p))
		r.Endpoints = append(r.Endpoints, loadAssignment(cn, s, p, sub))
	}
}

var adsSource = &corev3.ConfigSource{
	ResourceApiVersion:    corev3.ApiVersion_V3,
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
}

func apiListener(name string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: adsSource, RouteConfigName: name,
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
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
	opts, _ := anypb.New(&httpv3.HttpProtocolOptions{ // a fixed message always marshals
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
}

// loadAssignment lists a subset's endpoints: ready ones HEALTHY, terminating
// ones DRAINING, so that clients stop opening new streams to them without
// cutting those in flight. Endpoints are grouped into one locality per
// zone, weighted by its number of endpoints, so that load stays even per
// endpoint. (grpc-go refuses a locality without an ID and ignores one
// without a weight.)
func loadAssignment(name string, s *mesh.Service, p mesh.Port, subset string) *endpointv3.ClusterLoadAssignment {
	byZone := map[string][]*endpointv3.LbEndpoint{}
	var zones []string
	for _, e := range s.Endpoints {
		port, ok := e.PortOf(p)
		if !ok || !s.InSubset(e, subset) {
			continue
		}
		health := corev3.HealthStatus_HEALTHY
		if !e.Ready {
			health = corev3.HealthStatus_DRAINING
		}
		if _, ok := byZone[e.Zone]; !ok {
			zones = append(zones, e.Zone)
		}
		byZone[e.Zone] = append(byZone[e.Zone], &endpointv3.LbEndpoint{
			HealthStatus: health,
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: e.Address, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}},
			}}},
		})
	}
	slices.Sort(zones)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for _, z := range zones {
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Zone: z},
			LbEndpoints:         byZone[z],
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(byZone[z]))),
		})
	}
	return cla
}

// Validate runs each resource's ValidateAll and checks every reference.
func (r *Resources) Validate() error {
	return errors.Join(validateAll(r.Listeners), validateAll(r.Routes), validateAll(r.Clusters),
		validateAll(r.Endpoints), r.checkRefs())
}

// checkRefs checks that every name a resource uses exists: route
// configurations named by listeners (through api_listener or filter
// chains), clusters named by routes and TCP proxies, and endpoints for
// every EDS cluster.
func (r *Resources) checkRefs() error {
	var errs []error
	routes, clusters, clas := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, x := range r.Routes {
		routes[x.Name] = true
	}
	for _, x := range r.Clusters {
		clusters[x.Name] = true
	}
	for _, x := range r.Endpoints {
		clas[x.ClusterName] = true
	}
	needCluster := func(owner, c string) {
		if !clusters[c] {
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
		m := &hcmv3.HttpConnectionManager{}
		if err := cfg.UnmarshalTo(m); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", owner, err))
			return
		}
		if rds := m.GetRds(); rds != nil && !routes[rds.GetRouteConfigName()] {
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
					tp := &tcpproxyv3.TcpProxy{}
					if err := cfg.UnmarshalTo(tp); err != nil {
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
		if c.GetType() == clusterv3.Cluster_EDS && !clas[c.Name] {
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
