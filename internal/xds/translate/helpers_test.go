package translate

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/internal/mesh"
)

// translateFor builds one proxy's resources from scratch, as the server
// gives them: its flavour's shared set and its own.
func translateFor(m *mesh.Model, proxy Proxy, opts ...Options) (*Resources, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	sh, err := BuildShared(m, nil, o)
	if err != nil {
		return nil, err
	}
	return forProxy(sh, proxy)
}

// forProxy returns all of one proxy's resources, shared and its own, each
// list sorted by name, for the scope of the identity its pod runs as. The
// shared objects must not be changed.
func forProxy(sh *Shared, proxy Proxy) (*Resources, error) {
	own, err := Own(sh, proxy)
	if err != nil {
		return nil, err
	}
	sc := sh.ScopeOf(sh.CallerOf(proxy.Pod))
	base, err := sh.Scoped(proxy.Variant(), sc)
	if err != nil {
		return nil, err
	}
	if sh.HasLocal(proxy.Flavour) {
		local, err := sh.Local(proxy.Flavour, sh.LocalityOf(proxy.Pod), sc)
		if err != nil {
			return nil, err
		}
		own.Endpoints = append(own.Endpoints, local.Endpoints...)
	}
	return &Resources{
		Listeners: sortedBy(append(slices.Clone(base.Listeners), own.Listeners...), (*listenerv3.Listener).GetName),
		Routes:    sortedBy(append(slices.Clone(base.Routes), own.Routes...), (*routev3.RouteConfiguration).GetName),
		Clusters:  sortedBy(append(slices.Clone(base.Clusters), own.Clusters...), (*clusterv3.Cluster).GetName),
		Endpoints: sortedBy(append(slices.Clone(base.Endpoints), own.Endpoints...), (*endpointv3.ClusterLoadAssignment).GetClusterName),
	}, nil
}
