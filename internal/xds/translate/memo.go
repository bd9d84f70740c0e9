package translate

// This file holds the reuse memo of incremental translation: a Shared
// remembers what each service translated to, and the next model's
// translation reuses it for every service that is Equal to its previous
// self, so that a change to one service costs one service's translation
// and validation. The memo holds outputs of the pure functions in
// listeners.go, routes.go, clusters.go and endpoints.go, never inputs to
// them.

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Shared holds what every proxy of one flavour gets from a model. It is
// built and validated once per model; proxies share its objects, and the
// cache recognises an unchanged object by identity.
type Shared struct {
	// GRPC is the whole proxyless set: api listeners, routes, clusters and
	// endpoints of the gRPC and HTTP ports, in plain text (VariantGRPC);
	// GRPCMTLS the same with TLS on the clusters whose endpoints take mTLS
	// (VariantGRPCMTLS). Both are built from the same per-service objects:
	// they differ in those clusters only.
	GRPC, GRPCMTLS *Resources
	// Envoy holds the outbound listener, routes, clusters and endpoints of
	// every port; each sidecar adds its inbound listener and clusters.
	Envoy *Resources
	// inbound lists, per pod ("<namespace>/<name>"), its ports that mesh
	// services target; built the first time a sidecar needs it.
	inbound     map[string][]PodPort
	inboundOnce sync.Once
	model       *mesh.Model
	// envoyNames indexes Envoy's names, to check a sidecar's own
	// resources against.
	envoyNames *names
	// services keeps what each service translated to, for the next model.
	services map[string]*serviceOut
	opts     Options
	// local holds the endpoints made per caller locality (Local), scoped
	// the sets made per scope (Scoped).
	local  localSets
	scoped scopedSets
}

// serviceOut is what one service translates to.
type serviceOut struct {
	svc *mesh.Service
	// api holds the api listeners of its HTTP ports (proxyless gRPC);
	// http their routes, clusters and endpoints (both flavours); tcp the
	// clusters and endpoints of its other ports and chains its outbound
	// filter chains (Envoy).
	api, http, tcp Resources
	// grpcHTTP is http as proxyless gRPC without certificates gets it,
	// grpcMTLS as proxyless gRPC with pod certificates gets it, envoyHTTP
	// and envoyTCP http and tcp as sidecars get them: the same, or with
	// TLS copies of the clusters whose endpoints take mTLS.
	grpcHTTP, grpcMTLS, envoyHTTP, envoyTCP Resources
	chains                                  []*listenerv3.FilterChain
	// local are its clusters whose endpoints depend on the caller's
	// locality.
	local []*localCluster
	// decoded keeps the messages behind its filters' configuration.
	decoded decoded
}

// BuildShared translates what proxies share. A service equal to its
// version in prev keeps prev's resources, and a changed one keeps prev's
// object for every resource that came out equal, so that a model change
// costs, and touches, only what changed.
func BuildShared(m *mesh.Model, prev *Shared, opts Options) (*Shared, error) {
	if prev != nil && prev.opts != opts {
		prev = nil
	}
	sh := &Shared{GRPC: &Resources{}, GRPCMTLS: &Resources{}, Envoy: &Resources{}, model: m, services: make(map[string]*serviceOut, len(m.Order)), opts: opts}
	g, gm, e := sh.GRPC, sh.GRPCMTLS, sh.Envoy
	for _, key := range m.Order {
		s := m.Services[key]
		var old *serviceOut
		if prev != nil {
			old = prev.services[key]
		}
		out := old
		if old == nil || !old.svc.Equal(s) {
			var err error
			if out, err = translateService(s, old, opts); err != nil {
				return nil, fmt.Errorf("service %s: %w", key, err)
			}
		}
		sh.services[key] = out
		for _, lc := range out.local {
			sh.local.envoy = true
			sh.local.grpc = sh.local.grpc || lc.http
		}
		g.add(&out.api)
		g.add(&out.grpcHTTP)
		gm.add(&out.api)
		gm.add(&out.grpcMTLS)
		e.add(&out.envoyHTTP)
		e.add(&out.envoyTCP)
	}
	var prevOut *listenerv3.Listener
	if prev != nil {
		prevOut = prev.outbound()
	}
	// Each service's references were checked when it was translated;
	// the outbound listener names every service's.
	sh.envoyNames = namesOf(e)
	if err := addOutbound(sh, prevOut, e); err != nil {
		return nil, err
	}
	if c := opts.Observe.tracingCluster(); c != nil {
		if err := c.ValidateAll(); err != nil {
			return nil, fmt.Errorf("the tracing cluster: %w", err)
		}
		e.Clusters = append(e.Clusters, c)
	}
	return sh, nil
}

// outbound is the shared outbound listener.
func (sh *Shared) outbound() *listenerv3.Listener {
	for _, l := range sh.Envoy.Listeners {
		if l.Name == OutboundListener {
			return l
		}
	}
	return nil
}

// translateService translates one service and validates the result,
// keeping old's object for every resource that came out equal.
func translateService(s *mesh.Service, old *serviceOut, opts Options) (*serviceOut, error) {
	out := &serviceOut{svc: s, decoded: decoded{}}
	for _, p := range s.Ports {
		r := &out.tcp
		if p.Protocol.IsHTTP() {
			r = &out.http
			rc, err := routeConfig(ListenerName(s, p), s, p, opts.Observe)
			if err != nil {
				return nil, fmt.Errorf("port %d: TrafficPolicy %s: %w", p.Number, s.PolicyFor(p.Number).Name, err)
			}
			lis, err := apiListener(ListenerName(s, p), hasFault(s, p), out.decoded)
			if err != nil {
				return nil, fmt.Errorf("port %d: %w", p.Number, err)
			}
			r.Routes, out.api.Listeners = append(r.Routes, rc), append(out.api.Listeners, lis)
		}
		if err := addClusters(r, &out.local, s, p); err != nil {
			return nil, fmt.Errorf("port %d: TrafficPolicy %s: %w", p.Number, s.PolicyFor(p.Number).Name, err)
		}
		if len(s.ClusterIPs) > 0 {
			chain, err := outboundChain(s, p, opts.Observe, out.decoded)
			if err != nil {
				return nil, fmt.Errorf("port %d: %w", p.Number, err)
			}
			out.chains = append(out.chains, chain)
		}
	}
	if old != nil {
		reuse(&out.api, &old.api)
		reuse(&out.http, &old.http)
		reuse(&out.tcp, &old.tcp)
		for i, c := range out.chains {
			if j := slices.IndexFunc(old.chains, func(o *listenerv3.FilterChain) bool { return o.Name == c.Name }); j >= 0 && proto.Equal(old.chains[j], c) {
				out.chains[i] = old.chains[j]
			}
		}
	}
	out.grpcHTTP, out.envoyHTTP, out.envoyTCP = out.http, out.http, out.tcp
	out.grpcHTTP.Clusters = forProxyless(out.http.Clusters)
	out.grpcMTLS = out.grpcHTTP
	if tls := clusterTLS(s); tls != nil {
		out.grpcMTLS.Clusters = withTLS(out.grpcHTTP.Clusters, tls, upstreamTLS)
		if opts.EnvoyCerts != EnvoyCertsNone {
			socket := func(ids []string) *corev3.TransportSocket { return envoyUpstreamTLS(opts.EnvoyCerts, ids) }
			out.envoyHTTP.Clusters = withTLS(out.http.Clusters, tls, socket)
			out.envoyTCP.Clusters = withTLS(out.tcp.Clusters, tls, socket)
		}
	}
	was := old.orEmpty()
	if old != nil {
		for _, l := range []struct{ now, before []*clusterv3.Cluster }{
			{out.grpcHTTP.Clusters, old.grpcHTTP.Clusters}, {out.grpcMTLS.Clusters, old.grpcMTLS.Clusters},
			{out.envoyHTTP.Clusters, old.envoyHTTP.Clusters}, {out.envoyTCP.Clusters, old.envoyTCP.Clusters},
		} {
			reuseList(l.now, l.before, (*clusterv3.Cluster).GetName)
		}
	}
	known := slices.Concat(was.grpcHTTP.Clusters, was.grpcMTLS.Clusters, was.envoyHTTP.Clusters, was.envoyTCP.Clusters, out.http.Clusters, out.tcp.Clusters)
	if err := errors.Join(out.api.validateNew(&was.api), out.http.validateNew(&was.http), out.tcp.validateNew(&was.tcp),
		validateNewList(out.grpcHTTP.Clusters, known), validateNewList(out.grpcMTLS.Clusters, append(known, out.grpcHTTP.Clusters...)),
		validateNewList(out.envoyHTTP.Clusters, known), validateNewList(out.envoyTCP.Clusters, known)); err != nil {
		return nil, err
	}
	// A service's resources name only each other.
	var all Resources
	all.add(&out.api)
	all.add(&out.http)
	all.add(&out.tcp)
	// Endpoints made per locality have the same names at every locality.
	for _, lc := range out.local {
		all.Endpoints = append(all.Endpoints, lc.assignment(mesh.Locality{}))
	}
	if err := all.checkRefs(nil, out.decoded); err != nil {
		return nil, err
	}
	return out, nil
}

func (o *serviceOut) orEmpty() *serviceOut {
	if o == nil {
		return &serviceOut{}
	}
	return o
}

// validateNew runs ValidateAll on every resource that is not one of
// old's objects (those passed already).
func (r *Resources) validateNew(old *Resources) error {
	return errors.Join(validateNewList(r.Listeners, old.Listeners), validateNewList(r.Routes, old.Routes),
		validateNewList(r.Clusters, old.Clusters), validateNewList(r.Endpoints, old.Endpoints))
}

func validateNewList[T interface {
	comparable
	ValidateAll() error
}](list, old []T) error {
	var errs []error
	for _, x := range list {
		if !slices.Contains(old, x) {
			errs = append(errs, x.ValidateAll())
		}
	}
	return errors.Join(errs...)
}

// PodPort is a port of a pod that a mesh service port targets.
type PodPort struct {
	Number  int32
	Service mesh.Port
	// Address is the pod's address; MTLS its mode on the port.
	Address string
	MTLS    meshv1.MTLSMode
	// ModeBy are the PeerAuthentications that set MTLS (mesh.Endpoint).
	ModeBy [2]mesh.Ref
	// Owner is the key of the service whose port this is, and Generation
	// that MeshService's (its allow rules are translated from it); Policy
	// and PolicyGeneration name the TrafficPolicy in force on the port, if
	// any (its rate limit is translated from it).
	Owner            string
	Generation       int64
	Policy           string
	PolicyGeneration int64
	// DefaultInbound is the owner's default inbound policy (its
	// namespace's label may change it without a new generation).
	DefaultInbound wire.DefaultInbound
	// Conflict says that services with different allow rules target the
	// port (mesh.Model.RulesConflict): it refuses every caller.
	Conflict bool
}

// InboundPorts returns the ports of a pod ("<namespace>/<name>") that mesh
// services target, by number, whether the pod is ready or still starting:
// all that a sidecar's (or a proxyless server's) own resources are made
// from. (When two service ports target one pod port, the first in service
// order gives its protocol and policy; their allow rules must agree, or the
// port refuses every caller.)
func (sh *Shared) InboundPorts(pod string) []PodPort {
	sh.inboundOnce.Do(func() {
		sh.inbound = map[string][]PodPort{}
		for _, key := range sh.model.Order {
			s := sh.model.Services[key]
			for _, p := range s.Ports {
				for e := range s.PodEndpoints() {
					port, ok := e.PortOf(p)
					if e.Pod == "" || !ok {
						continue
					}
					ports := sh.inbound[e.Pod]
					i, found := slices.BinarySearchFunc(ports, port, func(ip PodPort, n int32) int { return cmp.Compare(ip.Number, n) })
					if !found {
						pp := PodPort{Number: port, Service: p, Address: e.Address, MTLS: e.ModeFor(port), ModeBy: e.ModeBy, Owner: key, Generation: s.Generation,
							DefaultInbound: s.DefaultInbound, Conflict: sh.model.RulesConflict(e.Pod, port)}
						if pol := s.PolicyFor(p.Number); pol != nil {
							pp.Policy, pp.PolicyGeneration = pol.Name, pol.Generation
						}
						sh.inbound[e.Pod] = slices.Insert(ports, i, pp)
					}
				}
			}
		}
	})
	return sh.inbound[pod]
}

// reuse swaps in prev's object for every resource equal to it.
func reuse(r, prev *Resources) {
	reuseList(r.Listeners, prev.Listeners, (*listenerv3.Listener).GetName)
	reuseList(r.Routes, prev.Routes, (*routev3.RouteConfiguration).GetName)
	reuseList(r.Clusters, prev.Clusters, (*clusterv3.Cluster).GetName)
	reuseList(r.Endpoints, prev.Endpoints, (*endpointv3.ClusterLoadAssignment).GetClusterName)
}

func reuseList[T proto.Message](list, prev []T, name func(T) string) {
	for i, x := range list {
		for _, o := range prev {
			if name(o) == name(x) && proto.Equal(o, x) {
				list[i] = o
				break
			}
		}
	}
}

func validateAll[T interface{ ValidateAll() error }](lists ...[]T) error {
	var errs []error
	for _, l := range lists {
		for _, x := range l {
			errs = append(errs, x.ValidateAll())
		}
	}
	return errors.Join(errs...)
}
