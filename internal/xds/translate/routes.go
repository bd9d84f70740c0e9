package translate

import (
	"fmt"
	"slices"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// routeConfig is a port's routes: the spec.http routes of the policy in
// force on the port, in order, then one for what no route matches, to all
// endpoints; each carries the policy's timeouts, retries, hashing and
// trace sampling.
func routeConfig(name string, s *mesh.Service, p mesh.Port, obs Observability) (*routev3.RouteConfiguration, error) {
	pol := s.PolicyFor(p.Number)
	tracing, err := obs.routeTracing(pol)
	if err != nil {
		return nil, err
	}
	var routes []*routev3.Route
	if pol != nil {
		for i := range pol.Spec.HTTP {
			rt := &pol.Spec.HTTP[i]
			action := weighted(s, p, rt.Backends)
			if err := routeResilience(action.Route, pol, rt, p); err != nil {
				return nil, fmt.Errorf("spec.http[%d]: %w", i, err)
			}
			action.Route.RequestMirrorPolicies = mirror(pol, i, p)
			fault, err := routeFault(rt.Fault)
			if err != nil {
				return nil, fmt.Errorf("spec.http[%d]: %w", i, err)
			}
			matches := rt.Matches
			if len(matches) == 0 {
				matches = []meshv1.HTTPMatch{{}}
			}
			for _, m := range matches {
				routes = append(routes, &routev3.Route{Name: rt.Name, Match: routeMatch(m), Action: action, TypedPerFilterConfig: fault, Tracing: tracing})
			}
		}
	}
	all := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterName(s, p, "")}}
	if err := routeResilience(all, pol, nil, p); err != nil {
		return nil, err
	}
	routes = append(routes, &routev3.Route{
		Match:   &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action:  &routev3.Route_Route{Route: all},
		Tracing: tracing,
	})
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    name,
			Domains: domains(s, p),
			Routes:  routes,
		}},
	}, nil
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

// mirror is a route's request mirroring (Envoy only: grpc-go does not read
// it): a copy of the share of requests asked for, to the mirror
// service's subset on the same port, its answer dropped.
func mirror(pol *mesh.Policy, i int, p mesh.Port) []*routev3.RouteAction_RequestMirrorPolicy {
	m := pol.Spec.HTTP[i].Mirror
	if m == nil || i >= len(pol.MirrorHosts) || pol.MirrorHosts[i] == "" {
		return nil
	}
	mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: ClusterName(&mesh.Service{Host: pol.MirrorHosts[i]}, p, m.Subset)}
	if m.Percentage != nil {
		mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: percent(*m.Percentage)}
	}
	return []*routev3.RouteAction_RequestMirrorPolicy{mp}
}
