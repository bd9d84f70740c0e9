package translate

import (
	"fmt"
	"math"
	"sync"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// This file holds locality: the endpoints of a port whose TrafficPolicy
// prefers nearby endpoints depend on where the caller runs. Such a
// cluster names its endpoints resource LocalEndpointsName(cluster) instead
// of its own name, and those resources are made once per caller locality
// (Shared.Local), ordered into priorities: the caller's zone first, then
// its region, then the rest. Every other cluster's endpoints stay in the
// shared set, the same for every caller.

// LocalEndpointsName is the endpoints resource of a cluster whose
// endpoints are ordered by the caller's locality.
func LocalEndpointsName(cluster string) string { return "local|" + cluster }

// localCluster is a cluster whose endpoints depend on the caller's
// locality: what its endpoints resource is made from.
type localCluster struct {
	name   string
	svc    *mesh.Service
	subset string
	lbs    []*endpointv3.LbEndpoint
	policy meshv1.LocalityPolicy
	// http says the cluster is of an HTTP port (proxyless gRPC gets only
	// those).
	http bool
}

// localityOf returns a port's locality preference, or nil when it has
// none (no policy, no locality, or mode None).
func localityOf(pol *mesh.Policy) *meshv1.LocalityPolicy {
	if pol == nil || pol.Spec.Locality == nil || pol.Spec.Locality.Mode == meshv1.LocalityNone {
		return nil
	}
	return pol.Spec.Locality
}

// rank orders an endpoint for a caller: 0 for the nearest endpoints, and
// up from there. A caller whose place is not known ranks every endpoint 0.
func rank(mode meshv1.LocalityMode, caller mesh.Locality, e mesh.Endpoint) int {
	sameRegion := caller.Region != "" && e.Region == caller.Region
	switch mode {
	case meshv1.LocalityPreferRegion:
		if caller.Region == "" || sameRegion {
			return 0
		}
		return 1
	default: // PreferZone
		switch {
		case caller == (mesh.Locality{}):
			return 0
		case caller.Zone != "" && e.Zone == caller.Zone && (caller.Region == "" || e.Region == "" || sameRegion):
			return 0
		case sameRegion:
			return 1
		}
		return 2
	}
}

// overprovisioning turns minHealthyPercent into Envoy's overprovisioning
// factor (in percent): a priority keeps all traffic while its healthy
// share times the factor is at least 100%, so spilling starts below
// 100/factor, which is minHealthyPercent. 0 spills only when no endpoint
// is healthy.
func overprovisioning(minHealthy *meshv1.Percentage) uint32 {
	m := 70
	if minHealthy != nil {
		m = int(*minHealthy)
	}
	if m <= 0 {
		return math.MaxInt32
	}
	return uint32(math.Ceil(10000 / float64(m)))
}

// assignment makes the cluster's endpoints for a caller: one locality per
// zone and priority, the priorities numbered from 0 without gaps (a gap
// is refused by grpc-go).
func (lc *localCluster) assignment(caller mesh.Locality) *endpointv3.ClusterLoadAssignment {
	ranks := make([]int, len(lc.svc.Endpoints))
	for i, e := range lc.svc.Endpoints {
		ranks[i] = rank(lc.policy.Mode, caller, e)
	}
	cla := loadAssignment(LocalEndpointsName(lc.name), lc.svc, lc.subset, lc.lbs, ranks)
	cla.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(overprovisioning(lc.policy.MinHealthyPercent))}
	return cla
}

// localSets remembers the endpoints made for each caller locality and
// flavour from one Shared.
type localSets struct {
	// grpc and envoy say whether the flavour has clusters whose endpoints
	// depend on the caller's locality (proxyless gRPC: those of HTTP
	// ports), set when the Shared is built.
	grpc, envoy bool
	mu          sync.Mutex
	sets        map[localKey]*Resources
}

type localKey struct {
	flavour wire.Flavour
	at      mesh.Locality
	scope   string
}

// HasLocal says whether proxies of a flavour get endpoints that depend on
// their locality (then Local gives them).
func (sh *Shared) HasLocal(flavour wire.Flavour) bool {
	if flavour == wire.FlavourEnvoy {
		return sh.local.envoy
	}
	return sh.local.grpc
}

// LocalityOf returns where a proxy's pod runs, by the model.
func (sh *Shared) LocalityOf(pod string) mesh.Locality { return sh.model.LocalityOf(pod) }

// Local returns the endpoints that proxies of a flavour at a locality,
// whose scope is sc, get for the clusters that prefer nearby endpoints,
// validated. They are made once per flavour, locality and scope; callers
// share the result and must not change it.
func (sh *Shared) Local(flavour wire.Flavour, at mesh.Locality, sc mesh.Scope) (*Resources, error) {
	sh.local.mu.Lock()
	defer sh.local.mu.Unlock()
	k := localKey{flavour, at, sc.ID}
	if r, ok := sh.local.sets[k]; ok {
		return r, nil
	}
	r := &Resources{}
	for _, key := range sc.Services {
		out := sh.services[key]
		if out == nil {
			continue
		}
		for _, lc := range out.local {
			if !lc.http && flavour != wire.FlavourEnvoy {
				continue
			}
			cla := lc.assignment(at)
			if err := cla.ValidateAll(); err != nil {
				return nil, fmt.Errorf("service %s: endpoints %s for %s/%s: %w", key, cla.ClusterName, at.Region, at.Zone, err)
			}
			r.Endpoints = append(r.Endpoints, cla)
		}
	}
	if sh.local.sets == nil {
		sh.local.sets = map[localKey]*Resources{}
	}
	sh.local.sets[k] = r
	return r, nil
}
