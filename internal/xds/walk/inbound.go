package walk

import (
	"fmt"
	"sort"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Caller is who sends a request to a sidecar's inbound listener: over mTLS
// with a certificate for Principal (a SPIFFE ID), or in plain text.
type Caller struct {
	MTLS      bool
	Principal string
}

// proven is the identity the caller proves: its principal over mTLS,
// none in plain text.
func (c Caller) proven() string {
	if !c.MTLS {
		return ""
	}
	return c.Principal
}

// Inbound is what a sidecar's inbound listener decides for a request.
type Inbound struct {
	FilterChain string
	// Allowed says whether the request reaches the application; Policy
	// names the allow rule that let it in ("" when the port has no rules),
	// Refused why it was refused. Cluster is the sidecar's inbound cluster
	// it goes on to ("" on a proxyless server, which answers it).
	Allowed bool
	Policy  string
	Refused string
	Cluster string
	// Path is what the application receives of an HTTP request's path
	// (normalized as the connection manager is configured to), with its
	// query.
	Path string
	// RateLimit is the port's token bucket (sidecars only), if any: what
	// lets requests in beyond the allow rules.
	RateLimit *localratelimitv3.LocalRateLimit
}

// SidecarInbound walks a request that reaches a sidecar's own pod on port
// from caller: the inbound filter chain for the port (mTLS only where the
// port is STRICT), then the allow rules (RBAC) of its HTTP connection
// manager, then the route to the inbound cluster.
func (w *Walker) SidecarInbound(port uint32, caller Caller, req Request) (*Inbound, error) {
	lis := w.listeners[translate.InboundListener]
	if lis == nil {
		return nil, fmt.Errorf("no listener %s", translate.InboundListener)
	}
	return w.inbound(matchChain(lis, "", port), caller, req, true)
}

// ProxylessInbound walks a call that reaches a proxyless gRPC server
// listening on address ("ip:port") from caller: the server Listener
// grpc-go asks for that address, its filter chain (mTLS only where the
// port is STRICT and workloads have pod certificates), then the allow
// rules (RBAC) of its HTTP connection manager. The server answers the
// call itself: there is no cluster.
func (w *Walker) ProxylessInbound(address string, caller Caller, req Request) (*Inbound, error) {
	name := wire.ServerListenerName(address)
	lis := w.listeners[name]
	if lis == nil {
		return nil, fmt.Errorf("no listener %s: the pod serves no mesh port at %s", name, address)
	}
	if len(lis.GetFilterChains()) != 1 {
		return nil, fmt.Errorf("listener %s has %d filter chains; weft sends one", name, len(lis.GetFilterChains()))
	}
	return w.inbound(lis.GetFilterChains()[0], caller, req, false)
}

// inbound walks a request through an inbound filter chain; forwards says
// the chain routes it on to a cluster (a sidecar's), rather than to the
// server itself.
func (w *Walker) inbound(chain *listenerv3.FilterChain, caller Caller, req Request, forwards bool) (*Inbound, error) {
	out := &Inbound{FilterChain: chain.GetName()}
	if chain.GetTransportSocket() != nil && !caller.MTLS {
		out.Refused = "the port takes mTLS only (STRICT): a plain-text caller fails the handshake"
		return out, nil
	}
	for _, f := range chain.GetFilters() {
		if !f.GetTypedConfig().MessageIs(&hcmv3.HttpConnectionManager{}) {
			continue
		}
		m := &hcmv3.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
			return nil, err
		}
		// The filters judge, and the application receives, the path
		// as the connection manager normalizes it.
		path, query, refused := normalizedPath(m, req.Path)
		if refused != "" {
			out.Refused = refused
			return out, nil
		}
		req.Path = path
		out.Path = path
		if query != "" {
			out.Path += "?" + query
		}
		for _, hf := range m.GetHttpFilters() {
			if hf.GetTypedConfig().MessageIs(&localratelimitv3.LocalRateLimit{}) {
				rl := &localratelimitv3.LocalRateLimit{}
				if err := hf.GetTypedConfig().UnmarshalTo(rl); err != nil {
					return nil, err
				}
				out.RateLimit = rl
				continue
			}
			if !hf.GetTypedConfig().MessageIs(&rbachttpv3.RBAC{}) {
				continue
			}
			r := &rbachttpv3.RBAC{}
			if err := hf.GetTypedConfig().UnmarshalTo(r); err != nil {
				return nil, err
			}
			policy, err := decide(r.GetRules(), caller.proven(), req)
			if err != nil {
				return nil, err
			}
			if policy == "" {
				out.Refused = "no allow rule of the port lets this caller and request in (RBAC: 403)"
				return out, nil
			}
			out.Policy = policy
		}
		if forwards {
			res, err := w.http(&Result{}, m, req)
			if err != nil {
				return nil, err
			}
			if len(res.Clusters) > 0 {
				out.Cluster = res.Clusters[0].Name
			}
		}
		out.Allowed = true
		return out, nil
	}
	// A TCP port: the allow rules' network RBAC judges the connection by
	// the caller alone, then the TCP proxy carries it.
	for _, f := range chain.GetFilters() {
		switch cfg := f.GetTypedConfig(); {
		case cfg.MessageIs(&rbacnetv3.RBAC{}):
			r := &rbacnetv3.RBAC{}
			if err := cfg.UnmarshalTo(r); err != nil {
				return nil, err
			}
			policy, err := decide(r.GetRules(), caller.proven(), Request{})
			if err != nil {
				return nil, err
			}
			if policy == "" {
				out.Refused = "no allow rule of the port lets this caller in (network RBAC: the connection is closed)"
				return out, nil
			}
			out.Policy = policy
		case cfg.MessageIs(&tcpproxyv3.TcpProxy{}):
			tp := &tcpproxyv3.TcpProxy{}
			if err := cfg.UnmarshalTo(tp); err != nil {
				return nil, err
			}
			out.Cluster = tp.GetCluster()
		}
	}
	out.Allowed = true
	return out, nil
}

// decide evaluates ALLOW rules: the first policy (by name) whose
// permissions and principals both match, or "" when none does.
func decide(rules *rbacv3.RBAC, principal string, req Request) (string, error) {
	if rules.GetAction() != rbacv3.RBAC_ALLOW {
		return "", fmt.Errorf("RBAC action %v: weft sends only ALLOW", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := rules.GetPolicies()[n]
		perm, err := anyPermission(p.GetPermissions(), req)
		if err != nil {
			return "", err
		}
		who, err := anyPrincipal(p.GetPrincipals(), principal)
		if err != nil {
			return "", err
		}
		if perm && who {
			return n, nil
		}
	}
	return "", nil
}

func anyPermission(ps []*rbacv3.Permission, req Request) (bool, error) {
	for _, p := range ps {
		ok, err := permits(p, req)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func permits(p *rbacv3.Permission, req Request) (bool, error) {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any, nil
	case *rbacv3.Permission_UrlPath:
		path := req.Path
		return stringMatches(r.UrlPath.GetPath(), path)
	case *rbacv3.Permission_Header:
		v, present := header(req, r.Header.GetName())
		ok, err := headerMatches(r.Header, v, present)
		return ok != r.Header.GetInvertMatch(), err
	case *rbacv3.Permission_AndRules:
		for _, q := range r.AndRules.GetRules() {
			ok, err := permits(q, req)
			if err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case *rbacv3.Permission_OrRules:
		return anyPermission(r.OrRules.GetRules(), req)
	}
	return false, fmt.Errorf("an RBAC permission weft does not send: %T", p.GetRule())
}

func anyPrincipal(ps []*rbacv3.Principal, principal string) (bool, error) {
	for _, p := range ps {
		a, ok := p.GetIdentifier().(*rbacv3.Principal_Authenticated_)
		if !ok {
			return false, fmt.Errorf("an RBAC principal weft does not send: %T", p.GetIdentifier())
		}
		if principal == "" {
			continue // plain text proves no identity
		}
		match, err := stringMatches(a.Authenticated.GetPrincipalName(), principal)
		if err != nil || match {
			return match, err
		}
	}
	return false, nil
}
