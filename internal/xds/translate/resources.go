package translate

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// ByType returns the resources keyed by xDS type URL, as caches take them.
// Secrets are a type only for sets that hold them (a sidecar's own).
func (r *Resources) ByType() map[string][]types.Resource {
	out := map[string][]types.Resource{
		resource.ListenerType: toResources(r.Listeners),
		resource.RouteType:    toResources(r.Routes),
		resource.ClusterType:  toResources(r.Clusters),
		resource.EndpointType: toResources(r.Endpoints),
	}
	if r.Secrets != nil {
		out[resource.SecretType] = toResources(r.Secrets)
	}
	return out
}

func toResources[T types.Resource](xs []T) []types.Resource {
	out := make([]types.Resource, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
