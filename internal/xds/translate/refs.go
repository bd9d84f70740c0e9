package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Validate runs each resource's ValidateAll and checks every reference.
func (r *Resources) Validate() error {
	return errors.Join(validateAll(r.Listeners), validateAll(r.Routes), validateAll(r.Clusters),
		validateAll(r.Endpoints), r.checkRefs(nil, nil))
}

// names indexes the names of resources that others refer to.
type names struct {
	routes, clusters, clas map[string]bool
}

func namesOf(r *Resources) *names {
	n := &names{routes: map[string]bool{}, clusters: map[string]bool{}, clas: map[string]bool{}}
	for _, x := range r.Routes {
		n.routes[x.Name] = true
	}
	for _, x := range r.Clusters {
		n.clusters[x.Name] = true
	}
	for _, x := range r.Endpoints {
		n.clas[x.ClusterName] = true
	}
	return n
}

// checkRefs checks that every name a resource uses exists, among r's own
// resources or those of also (nil for none): route configurations named by
// listeners (through api_listener or filter chains), clusters named by
// routes and TCP proxies, and endpoints for every EDS cluster.
func (r *Resources) checkRefs(also *names, reg decoded) error {
	var errs []error
	own := namesOf(r)
	if also == nil {
		also = &names{}
	}
	needCluster := func(owner, c string) {
		if !own.clusters[c] && !also.clusters[c] {
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
		m, err := unpack(reg, cfg, &hcmv3.HttpConnectionManager{})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", owner, err))
			return
		}
		if rds := m.GetRds(); rds != nil && !own.routes[rds.GetRouteConfigName()] && !also.routes[rds.GetRouteConfigName()] {
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
					tp, err := unpack(reg, cfg, &tcpproxyv3.TcpProxy{})
					if err != nil {
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
		if eds := cmp.Or(c.GetEdsClusterConfig().GetServiceName(), c.Name); c.GetType() == clusterv3.Cluster_EDS && !own.clas[eds] && !also.clas[eds] {
			errs = append(errs, fmt.Errorf("%w: cluster %s has no endpoints resource %s", ErrDangling, c.Name, eds))
		}
	}
	return errors.Join(errs...)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
