// Package walk follows a request through the configuration weft sends a
// proxy, as the proxy would: an Envoy sidecar from its outbound listener
// (filter chain by destination address and port, then the HTTP connection
// manager or the TCP proxy), a proxyless gRPC client from the api listener
// its target names; then the route configuration, the virtual host by
// authority, the first route that matches, its clusters and their
// endpoints. It reports what applies to the request. No Envoy binary runs
// in weft's tests: this walk, Envoy's own validation and golden files are
// how a sidecar's behaviour is shown, and the walk is checked against
// grpc-go's real routing wherever both flavours share a feature.
package walk

import (
	"cmp"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/weftmesh/weft/internal/xds/translate"
)

// Request is a synthetic request. For a sidecar, DestinationIP and
// DestinationPort are where the application sent it (the outbound
// listener's original destination); for a proxyless client, Target is the
// xds:/// target without its scheme. Authority is the HTTP host.
type Request struct {
	DestinationIP   string
	DestinationPort uint32
	Target          string
	Authority       string
	Method          string
	Path            string
	Headers         map[string]string
}

// Cluster is one cluster a request may go to, with its share.
type Cluster struct {
	Name   string
	Weight uint32
	// Config is the cluster as sent; Endpoints its addresses ("ip:port")
	// in the priority that takes traffic while it is healthy (0), and
	// Failover those of each next priority, in order.
	Config    *clusterv3.Cluster
	Endpoints []string
	Failover  [][]string
	// TLS is how the proxy speaks to the endpoints over mTLS (nil: plain
	// text); TLSError says why it could not be read.
	TLS      *UpstreamTLS
	TLSError error
}

// Result is what applies to a request.
type Result struct {
	Listener    string
	FilterChain string
	// TCP is set when a TCP proxy, not HTTP routing, carries the request.
	TCP bool
	// RouteConfig, VirtualHost and Route name what matched (Route may be
	// unnamed: RouteIndex is its position).
	RouteConfig string
	VirtualHost string
	Route       string
	RouteIndex  int
	// Action is the matched route's action: timeout, retry policy, hash
	// policy, mirrors.
	Action *routev3.RouteAction
	// Fault is the route's fault injection, if any.
	Fault    *faultv3.HTTPFault
	Clusters []Cluster
}

// Walker holds one proxy's configuration, indexed by name.
type Walker struct {
	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	// endpoints are each endpoints resource's addresses, by priority.
	endpoints map[string][][]string
}

// New indexes the sets a proxy holds (its flavour's shared set and its own).
func New(sets ...*translate.Resources) *Walker {
	w := &Walker{listeners: map[string]*listenerv3.Listener{}, routes: map[string]*routev3.RouteConfiguration{},
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string][][]string{}}
	for _, r := range sets {
		for _, l := range r.Listeners {
			w.listeners[l.GetName()] = l
		}
		for _, rc := range r.Routes {
			w.routes[rc.GetName()] = rc
		}
		for _, c := range r.Clusters {
			w.clusters[c.GetName()] = c
		}
		for _, cla := range r.Endpoints {
			var addrs [][]string
			for _, loc := range cla.GetEndpoints() {
				for int(loc.GetPriority()) >= len(addrs) {
					addrs = append(addrs, nil)
				}
				for _, lb := range loc.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					addrs[loc.GetPriority()] = append(addrs[loc.GetPriority()], net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
				}
			}
			w.endpoints[cla.GetClusterName()] = addrs
		}
	}
	return w
}

// Sidecar walks a request an application sent through its sidecar's
// outbound listener.
func (w *Walker) Sidecar(req Request) (*Result, error) {
	lis := w.listeners[translate.OutboundListener]
	if lis == nil {
		return nil, fmt.Errorf("no listener %s", translate.OutboundListener)
	}
	chain := matchChain(lis, req.DestinationIP, req.DestinationPort)
	if chain == nil {
		return nil, fmt.Errorf("no filter chain of %s takes %s:%d", lis.GetName(), req.DestinationIP, req.DestinationPort)
	}
	res := &Result{Listener: lis.GetName(), FilterChain: chain.GetName()}
	for _, f := range chain.GetFilters() {
		switch cfg := f.GetTypedConfig(); {
		case cfg.MessageIs(&hcmv3.HttpConnectionManager{}):
			m := &hcmv3.HttpConnectionManager{}
			if err := cfg.UnmarshalTo(m); err != nil {
				return nil, err
			}
			return w.http(res, m, req)
		case cfg.MessageIs(&tcpproxyv3.TcpProxy{}):
			tp := &tcpproxyv3.TcpProxy{}
			if err := cfg.UnmarshalTo(tp); err != nil {
				return nil, err
			}
			res.TCP = true
			res.Clusters = []Cluster{w.cluster(tp.GetCluster(), 1)}
			return res, nil
		}
	}
	return nil, fmt.Errorf("filter chain %s has no HTTP connection manager or TCP proxy", chain.GetName())
}

// Proxyless walks a call a proxyless gRPC client makes to xds:///<Target>.
func (w *Walker) Proxyless(req Request) (*Result, error) {
	lis := w.listeners[req.Target]
	if lis == nil {
		return nil, fmt.Errorf("no listener %s", req.Target)
	}
	m := &hcmv3.HttpConnectionManager{}
	if err := lis.GetApiListener().GetApiListener().UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("listener %s: %w", req.Target, err)
	}
	if req.Authority == "" {
		req.Authority = req.Target
	}
	return w.http(&Result{Listener: lis.GetName()}, m, req)
}

// matchChain picks the filter chain Envoy would: the most specific match
// on destination port, then the longest destination prefix; the default
// chain when none matches.
func matchChain(lis *listenerv3.Listener, ip string, port uint32) *listenerv3.FilterChain {
	addr := net.ParseIP(ip)
	var best *listenerv3.FilterChain
	bestPort, bestLen := false, -1
	for _, fc := range lis.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		portSet := m.GetDestinationPort() != nil
		if portSet && m.GetDestinationPort().GetValue() != port {
			continue
		}
		plen := 0
		if len(m.GetPrefixRanges()) > 0 {
			plen = -1
			for _, pr := range m.GetPrefixRanges() {
				_, n, err := net.ParseCIDR(pr.GetAddressPrefix() + "/" + strconv.Itoa(int(pr.GetPrefixLen().GetValue())))
				if err == nil && addr != nil && n.Contains(addr) {
					plen = max(plen, int(pr.GetPrefixLen().GetValue()))
				}
			}
			if plen < 0 {
				continue
			}
		}
		if (portSet && !bestPort) || (portSet == bestPort && plen > bestLen) {
			best, bestPort, bestLen = fc, portSet, plen
		}
	}
	if best == nil {
		return lis.GetDefaultFilterChain()
	}
	return best
}

func (w *Walker) http(res *Result, m *hcmv3.HttpConnectionManager, req Request) (*Result, error) {
	rc := m.GetRouteConfig()
	if rds := m.GetRds(); rds != nil {
		rc = w.routes[rds.GetRouteConfigName()]
		if rc == nil {
			return nil, fmt.Errorf("no route configuration %s", rds.GetRouteConfigName())
		}
	}
	res.RouteConfig = rc.GetName()
	vh := matchVirtualHost(rc, req.Authority)
	if vh == nil {
		return nil, fmt.Errorf("no virtual host of %s takes authority %q", rc.GetName(), req.Authority)
	}
	res.VirtualHost = vh.GetName()
	for i, rt := range vh.GetRoutes() {
		ok, err := matches(rt.GetMatch(), req)
		if err != nil {
			return nil, fmt.Errorf("route %d of %s: %w", i, vh.GetName(), err)
		}
		if !ok {
			continue
		}
		res.Route, res.RouteIndex, res.Action = rt.GetName(), i, rt.GetRoute()
		if cfg := rt.GetTypedPerFilterConfig()["envoy.filters.http.fault"]; cfg != nil {
			f := &faultv3.HTTPFault{}
			if err := cfg.UnmarshalTo(f); err != nil {
				return nil, err
			}
			res.Fault = f
		}
		a := rt.GetRoute()
		if a == nil {
			return nil, fmt.Errorf("route %d of %s has no route action", i, vh.GetName())
		}
		if c := a.GetCluster(); c != "" {
			res.Clusters = []Cluster{w.cluster(c, 1)}
		}
		for _, wc := range a.GetWeightedClusters().GetClusters() {
			res.Clusters = append(res.Clusters, w.cluster(wc.GetName(), wc.GetWeight().GetValue()))
		}
		return res, nil
	}
	return nil, fmt.Errorf("no route of %s matches %s %s", vh.GetName(), req.Method, req.Path)
}

func (w *Walker) cluster(name string, weight uint32) Cluster {
	c := Cluster{Name: name, Weight: weight, Config: w.clusters[name]}
	c.TLS, c.TLSError = upstreamTLS(c.Config)
	// A cluster's endpoints resource is its EDS service name, or its own.
	byPriority := w.endpoints[cmp.Or(c.Config.GetEdsClusterConfig().GetServiceName(), name)]
	if len(byPriority) > 0 {
		c.Endpoints = byPriority[0]
	}
	if len(byPriority) > 1 {
		c.Failover = byPriority[1:]
	}
	return c
}

// matchVirtualHost picks by authority: an exact domain first, then the
// longest suffix wildcard ("*.x"), then the longest prefix wildcard
// ("x*"), then "*". Domains are matched without case.
func matchVirtualHost(rc *routev3.RouteConfiguration, authority string) *routev3.VirtualHost {
	host := strings.ToLower(authority)
	var suffix, prefix, wildcard *routev3.VirtualHost
	suffixLen, prefixLen := -1, -1
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == host:
				return vh
			case d == "*":
				if wildcard == nil {
					wildcard = vh
				}
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && len(d) > suffixLen:
				suffix, suffixLen = vh, len(d)
			case strings.HasSuffix(d, "*") && strings.HasPrefix(host, d[:len(d)-1]) && len(d) > prefixLen:
				prefix, prefixLen = vh, len(d)
			}
		}
	}
	switch {
	case suffix != nil:
		return suffix
	case prefix != nil:
		return prefix
	}
	return wildcard
}

// matches says whether a route's match takes the request: its path (exact,
// prefix, RE2 regex over the whole path) and every header matcher
// (":method" is the method).
func matches(m *routev3.RouteMatch, req Request) (bool, error) {
	path := req.Path
	if path == "" {
		path = "/"
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch {
	case m.GetPath() != "":
		if path != m.GetPath() {
			return false, nil
		}
	case m.GetSafeRegex() != nil:
		re, err := regexp.Compile("^(?:" + m.GetSafeRegex().GetRegex() + ")$")
		if err != nil {
			return false, err
		}
		if !re.MatchString(path) {
			return false, nil
		}
	default:
		if !strings.HasPrefix(path, m.GetPrefix()) {
			return false, nil
		}
	}
	for _, hm := range m.GetHeaders() {
		v, present := header(req, hm.GetName())
		ok, err := headerMatches(hm, v, present)
		if err != nil {
			return false, err
		}
		if ok == hm.GetInvertMatch() {
			return false, nil
		}
	}
	return true, nil
}

func header(req Request, name string) (string, bool) {
	name = strings.ToLower(name)
	switch name {
	case ":method":
		return req.Method, req.Method != ""
	case ":path":
		return req.Path, true
	case ":authority":
		return req.Authority, true
	}
	for k, v := range req.Headers {
		if strings.ToLower(k) == name {
			return v, true
		}
	}
	return "", false
}

func headerMatches(hm *routev3.HeaderMatcher, v string, present bool) (bool, error) {
	if _, ok := hm.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch); ok {
		return present == hm.GetPresentMatch(), nil
	}
	if !present {
		return false, nil
	}
	sm := hm.GetStringMatch()
	if sm == nil {
		return false, fmt.Errorf("header matcher %s: a kind weft does not send", hm.GetName())
	}
	return stringMatches(sm, v)
}

func stringMatches(sm *matcherv3.StringMatcher, v string) (bool, error) {
	if sm.GetIgnoreCase() {
		v = strings.ToLower(v)
	}
	lower := func(s string) string {
		if sm.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == lower(p.Exact), nil
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, lower(p.Prefix)), nil
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, lower(p.Suffix)), nil
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(v, lower(p.Contains)), nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return false, err
		}
		return re.MatchString(v), nil
	}
	return false, fmt.Errorf("a string matcher weft does not send")
}

// Names lists the clusters of a result.
func (r *Result) Names() []string {
	out := make([]string, len(r.Clusters))
	for i, c := range r.Clusters {
		out[i] = c.Name
	}
	return slices.Clip(out)
}
