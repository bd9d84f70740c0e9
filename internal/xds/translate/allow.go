package translate

import (
	"slices"
	"strconv"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// allowRules turns a MeshService's allow rules into RBAC for one of its
// ports: an ALLOW policy per rule that applies to the port. A service
// without rules follows its default inbound policy: nil (every caller in)
// for all, one policy for the identities of its namespace, none at all
// (nobody in) for deny. A caller is known only by the SPIFFE ID of its
// mTLS certificate, so plain-text callers match no rule. On a TCP port
// (http = false) a rule with paths or methods never matches: there is no
// request to compare them with.
func allowRules(s *mesh.Service, p mesh.Port, trustDomain string, http bool) *rbacv3.RBAC {
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	if len(s.Allow) == 0 {
		switch s.DefaultInbound {
		case wire.DefaultInboundNamespace:
			out.Policies["default-namespace"] = &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals: principals([]meshv1.Source{{Namespace: s.Namespace}}, trustDomain)}
			return out
		case wire.DefaultInboundDeny:
			return out
		}
		return nil
	}
	for i, r := range s.Allow {
		if len(r.Ports) > 0 && !slices.Contains(r.Ports, p.Number) {
			continue
		}
		if !http && (len(r.Paths) > 0 || len(r.Methods) > 0) {
			continue
		}
		out.Policies["allow-"+strconv.Itoa(i)] = &rbacv3.Policy{Permissions: []*rbacv3.Permission{permission(r)}, Principals: principals(r.From, trustDomain)}
	}
	return out
}

// permission is what a rule lets through: any request, or those whose path
// and method match.
func permission(r meshv1.AllowRule) *rbacv3.Permission {
	var and []*rbacv3.Permission
	if len(r.Paths) > 0 {
		var or []*rbacv3.Permission
		for _, pm := range r.Paths {
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
				Rule: &matcherv3.PathMatcher_Path{Path: pathMatcher(pm)}}}})
		}
		and = append(and, anyOf(or))
	}
	if len(r.Methods) > 0 {
		var or []*rbacv3.Permission
		for _, m := range r.Methods {
			or = append(or, &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
				HeaderMatchSpecifier: stringMatch(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: string(m)}})}}})
		}
		and = append(and, anyOf(or))
	}
	switch len(and) {
	case 0:
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
	case 1:
		return and[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: and}}}
}

func anyOf(or []*rbacv3.Permission) *rbacv3.Permission {
	if len(or) == 1 {
		return or[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: or}}}
}

func pathMatcher(pm meshv1.PathMatch) *matcherv3.StringMatcher {
	switch pm.Type {
	case meshv1.MatchExact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: pm.Value}}
	case meshv1.MatchRegularExpression:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: pm.Value}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: pm.Value}}
}

// principals are the callers a rule names, by the SPIFFE ID of their
// certificate: one identity, a namespace's service account, a namespace,
// or ("*") every workload of the trust domain.
func principals(from []meshv1.Source, trustDomain string) []*rbacv3.Principal {
	var out []*rbacv3.Principal
	for _, src := range from {
		var sm *matcherv3.StringMatcher
		switch {
		case src.Identity != "":
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: src.Identity}}
		case src.Namespace == "*":
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: wire.SPIFFEDomainPrefix(trustDomain)}}
		case src.ServiceAccount != "":
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: wire.SPIFFEID(trustDomain, src.Namespace, src.ServiceAccount)}}
		default:
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: wire.SPIFFENamespacePrefix(trustDomain, src.Namespace)}}
		}
		out = append(out, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: sm}}})
	}
	return out
}

// httpFilters are an inbound HCM's filters: RBAC when the port has allow
// rules, then the router.
func httpFilters(rules *rbacv3.RBAC) []*hcmv3.HttpFilter {
	if rules == nil {
		return []*hcmv3.HttpFilter{routerHTTPFilter}
	}
	return []*hcmv3.HttpFilter{{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: mustAny(&rbachttpv3.RBAC{Rules: rules})}}, routerHTTPFilter}
}

// networkRBAC is the TCP form: a network filter ahead of tcp_proxy.
func networkRBAC(statPrefix string, rules *rbacv3.RBAC) *rbacnetv3.RBAC {
	return &rbacnetv3.RBAC{StatPrefix: statPrefix, Rules: rules}
}
