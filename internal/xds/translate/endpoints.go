package translate

import (
	"cmp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/mesh"
)

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
// ignores one without a weight.) ranks, by endpoint index, put endpoints
// into priorities, lowest first, numbered from 0 without gaps; nil puts
// every endpoint into priority 0.
func loadAssignment(name string, s *mesh.Service, subset string, lbs []*endpointv3.LbEndpoint, ranks []int) *endpointv3.ClusterLoadAssignment {
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
	rankOf := func(i int) int {
		if ranks == nil {
			return 0
		}
		return ranks[i]
	}
	// Endpoints are sorted by address; keep that order within each zone
	// (most services have one zone and one rank, and need no sorting).
	first := s.Endpoints[picked[0]]
	if slices.ContainsFunc(picked, func(i int) bool {
		return s.Endpoints[i].Zone != first.Zone || s.Endpoints[i].Region != first.Region || rankOf(i) != rankOf(picked[0])
	}) {
		slices.SortStableFunc(picked, func(a, b int) int {
			ea, eb := s.Endpoints[a], s.Endpoints[b]
			return cmp.Or(cmp.Compare(rankOf(a), rankOf(b)), strings.Compare(ea.Region, eb.Region), strings.Compare(ea.Zone, eb.Zone))
		})
	}
	priority, lastRank := uint32(0), rankOf(picked[0])
	for start := 0; start < len(picked); {
		at := s.Endpoints[picked[start]]
		r := rankOf(picked[start])
		if r != lastRank {
			priority, lastRank = priority+1, r
		}
		end := start
		for end < len(picked) && rankOf(picked[end]) == r && s.Endpoints[picked[end]].Zone == at.Zone && s.Endpoints[picked[end]].Region == at.Region {
			end++
		}
		group := make([]*endpointv3.LbEndpoint, 0, end-start)
		for _, i := range picked[start:end] {
			group = append(group, lbs[i])
		}
		cla.Endpoints = append(cla.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: at.Region, Zone: at.Zone},
			LbEndpoints:         group,
			LoadBalancingWeight: wrapperspb.UInt32(uint32(len(group))),
			Priority:            priority,
		})
		start = end
	}
	return cla
}
