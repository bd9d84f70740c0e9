package translate

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/anypb"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// addClusters adds a service port's EDS clusters and endpoints: one for all
// endpoints and one per subset. When the port's policy prefers nearby
// endpoints, the clusters name endpoints resources made per caller
// locality (locality.go), added to local instead.
func addClusters(r *Resources, local *[]*localCluster, s *mesh.Service, p mesh.Port) error {
	subsets := []string{""}
	for _, sub := range s.Subsets {
		subsets = append(subsets, sub.Name)
	}
	pol := s.PolicyFor(p.Number)
	// Each endpoint is made once and shared by every subset it is in.
	lbs := lbEndpoints(s, p)
	for _, sub := range subsets {
		cn := ClusterName(s, p, sub)
		c := edsCluster(cn, p)
		if err := clusterResilience(c, pol, p); err != nil {
			return err
		}
		r.Clusters = append(r.Clusters, c)
		if loc := localityOf(pol); loc != nil {
			c.EdsClusterConfig.ServiceName = LocalEndpointsName(cn)
			*local = append(*local, &localCluster{name: cn, svc: s, subset: sub, lbs: lbs, policy: *loc, http: p.Protocol.IsHTTP()})
			continue
		}
		r.Endpoints = append(r.Endpoints, loadAssignment(cn, s, sub, lbs, nil))
	}
	return nil
}

// http2Options is every HTTP/2 cluster's protocol options: one map, shared
// and never changed.
var http2Options = map[string]*anypb.Any{httpProtocolOptionsKey: http2Upstream}

// httpProtocolOptionsKey is where a cluster's upstream HTTP options go.
const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

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
	if !speaksHTTP2(p) {
		return
	}
	c.TypedExtensionProtocolOptions = http2Options
}

// speaksHTTP2 says whether Envoy speaks HTTP/2 to a port's endpoints.
func speaksHTTP2(p mesh.Port) bool {
	return p.Protocol == meshv1.ProtocolGRPC || p.Protocol == meshv1.ProtocolHTTP2
}
