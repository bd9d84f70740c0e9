// Package mesh holds weft's model of the mesh: an immutable value built
// from the objects weft watches, by one pure function that also judges
// every MeshService, TrafficPolicy and PeerAuthentication (its verdict:
// Accepted, ResolvedRefs, why, and which field). Translation to xDS reads
// only the model; the status writers write only its verdicts.
package mesh

import (
	"cmp"
	"fmt"
	"iter"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

// Input is what the model is built from: the informer caches' contents.
type Input struct {
	ClusterDomain  string
	Services       []corev1.Service
	EndpointSlices []discoveryv1.EndpointSlice
	Pods           []corev1.Pod
	// Nodes are the nodes' metadata: their topology labels place pods and
	// endpoints (Locality).
	Nodes []metav1.PartialObjectMetadata
	// Namespaces say which namespaces opted into the mesh (the
	// PeerAuthentications of the mesh namespace cover their pods).
	Namespaces      []corev1.Namespace
	MeshServices    []meshv1.MeshService
	TrafficPolicies []meshv1.TrafficPolicy
	// PeerAuthentications set each pod's mTLS mode; those whose current
	// generation is accepted count.
	PeerAuthentications []meshv1.PeerAuthentication
	// MeshNamespace holds the mesh-wide PeerAuthentication (default
	// weft-system); TrustDomain names identities (default cluster.local).
	MeshNamespace string
	TrustDomain   string
	// DefaultInbound is who may call a MeshService without allow rules
	// (default all); a namespace's wire.LabelDefaultInbound overrides it.
	DefaultInbound wire.DefaultInbound
	// LastGood is what the previous model applied (its Applied): a
	// MeshService or TrafficPolicy whose current generation is refused
	// keeps its last good generation in force.
	LastGood Applied
	// Changed is when the first change this build reflects was seen (the
	// watcher's informer event); the model carries it to the proxies'
	// acknowledgements, which measure how long the change took to reach
	// them. Zero when unknown.
	Changed time.Time
}

// Applied is the MeshServices and TrafficPolicies a model applies, by
// "<namespace>/<name>": the generation in force of each, which may be an
// earlier one than the object's current generation.
type Applied struct {
	MeshServices    map[string]meshv1.MeshService
	TrafficPolicies map[string]meshv1.TrafficPolicy
}

// Model is the mesh at one moment. Do not change it after Build.
type Model struct {
	// Services by "<namespace>/<name>" of the MeshService, in name order in
	// Order.
	Services map[string]*Service
	Order    []string
	// Applied is what the model applies; the next build takes it as
	// LastGood.
	Applied Applied
	// Verdicts judge every MeshService, TrafficPolicy and
	// PeerAuthentication of the input, in its current generation.
	Verdicts map[Ref]Verdict
	// Localities place pods, by "<namespace>/<name>": the zone and region
	// of the node each runs on (pods on unlabelled nodes are absent).
	Localities map[string]Locality
	// Shaping are the PeerAuthentications that set the mTLS mode of at
	// least one endpoint in the model, with the generation in force: the
	// ones whose acknowledgement proxies owe.
	Shaping map[Ref]int64
	// Callers are the mesh identities pods run as, by "<namespace>/<name>"
	// (CallerOf); TrustDomain names them.
	Callers     map[string]Caller
	TrustDomain string
	// Changed is the input's Changed.
	Changed time.Time
	// conflicts are the pod ports that services with different allow
	// rules target (RulesConflict), with those services.
	conflicts map[podPort][]string
	// restricted are the services, in Order, that do not let every caller
	// in (ScopeOf).
	restricted []string
}

// Locality is where a pod runs: its node's topology.kubernetes.io region
// and zone labels ("" where a label is missing).
type Locality struct {
	Region, Zone string
}

// LocalityOf returns where a pod ("<namespace>/<name>") runs; the zero
// Locality when that is not known.
func (m *Model) LocalityOf(pod string) Locality { return m.Localities[pod] }

// Service is one MeshService that resolved.
type Service struct {
	Namespace string
	Name      string
	// Host is the Service's cluster DNS name, "<svc>.<ns>.svc.<domain>".
	Host string
	// ServiceName is the Kubernetes Service's name; ClusterIPs its virtual
	// addresses (none for a headless Service).
	ServiceName string
	ClusterIPs  []string
	Ports       []Port
	Subsets     []meshv1.Subset
	// Allow is who may call the service; without rules, DefaultInbound
	// says (the namespace's label, else the mesh's setting; a label that
	// names no policy denies, failing closed).
	Allow          []meshv1.AllowRule
	DefaultInbound wire.DefaultInbound
	// Endpoints are the Service's endpoints that are ready or
	// terminating, sorted by address.
	Endpoints []Endpoint
	// Starting are the endpoints of pods that are not ready yet (and not
	// terminating), sorted by address. No caller is sent them, but their
	// own proxies are sent their inbound configuration: a proxyless gRPC
	// server serves only once it has its Listener, and its readiness
	// probe may need it to.
	Starting []Endpoint
	// Policies are the TrafficPolicies in force on the service, sorted by
	// name: at most one shapes each port (the verdicts refuse overlaps).
	// A port without one sends all traffic to all endpoints.
	Policies []Policy
	// Generation is the MeshService's metadata.generation in the model.
	Generation int64
}

// Policy is a TrafficPolicy in force on a service: the generation in
// force (the current one, or the last good one) and what it asks for.
type Policy struct {
	Name       string
	Generation int64
	// Port is the service port the policy shapes (spec.targetRef.port);
	// 0 means every port.
	Port int32
	// Spec is the generation's spec, a copy the model owns.
	Spec meshv1.TrafficPolicySpec
	// MirrorHosts are, by index of spec.http, the host of the Service
	// behind each route's mirror ("" where a route mirrors nothing).
	MirrorHosts []string
}

// PolicyFor returns the policy that shapes a port, or nil.
func (s *Service) PolicyFor(port int32) *Policy {
	for i := range s.Policies {
		if p := &s.Policies[i]; p.Port == 0 || p.Port == port {
			return p
		}
	}
	return nil
}

// Port is a mesh port of a service.
type Port struct {
	Number   int32
	Name     string
	Protocol meshv1.Protocol
	// TargetName and TargetNumber say which endpoint port serves it.
	TargetName   string
	TargetNumber int32
}

// Endpoint is one backend address.
type Endpoint struct {
	Address string
	// Pod is "<namespace>/<name>" of the pod behind the endpoint, if any.
	Pod string
	// Ports by Service port name ("" for an unnamed single port).
	Ports map[string]int32
	// Labels are the pod's labels (subset membership).
	Labels map[string]string
	// Zone is the EndpointSlice's zone (or its node's), Region its node's.
	Zone, Region string
	// Identity is the pod's SPIFFE ID ("" without a pod); MTLS its mTLS
	// mode and PortMTLS the overrides per pod port (see ModeFor).
	Identity string
	MTLS     meshv1.MTLSMode
	PortMTLS map[int32]meshv1.MTLSMode
	// ModeBy are the PeerAuthentications that set MTLS and PortMTLS (at
	// most two; zero Refs where fewer); Shaping has their generations.
	ModeBy [2]Ref
	// Ready endpoints take new traffic; terminating ones only drain.
	Ready       bool
	Terminating bool
}

// Key is a service's map key.
func Key(namespace, name string) string { return namespace + "/" + name }

// Build makes the model from its input and judges every object in it. It
// applies a MeshService or TrafficPolicy only when its verdict accepts and
// resolves its current generation, so that resources that cannot be
// applied leave nothing half-applied; when the current generation is
// refused, the last good one (in.LastGood) stays in force, so that a bad
// edit changes no traffic.
func Build(in Input) *Model {
	domain := cmp.Or(in.ClusterDomain, "cluster.local")
	meshNamespace := cmp.Or(in.MeshNamespace, "weft-system")
	trustDomain := cmp.Or(in.TrustDomain, "cluster.local")
	ix := newIndex(in)
	m := &Model{Services: make(map[string]*Service, len(in.MeshServices)),
		Verdicts: make(map[Ref]Verdict, len(in.MeshServices)+len(in.TrafficPolicies)+len(in.PeerAuthentications)), Shaping: map[Ref]int64{},
		Applied:    Applied{MeshServices: map[string]meshv1.MeshService{}, TrafficPolicies: map[string]meshv1.TrafficPolicy{}},
		Localities: ix.localities(), Callers: ix.callers(), TrustDomain: trustDomain, Changed: in.Changed}

	var inForcePAs []*meshv1.PeerAuthentication
	for i := range in.PeerAuthentications {
		pa := &in.PeerAuthentications[i]
		v := judgePeerAuth(ix.peerAuthScope(pa, meshNamespace))
		m.Verdicts[Ref{KindPeerAuthentication, pa.Namespace, pa.Name}] = v
		if v.InForce() {
			inForcePAs = append(inForcePAs, pa)
		}
	}
	pa := newPeerAuth(inForcePAs, func(p *meshv1.PeerAuthentication) labels.Selector { return ix.selectors[p].sel }, meshNamespace)

	for i := range in.MeshServices {
		ms := &in.MeshServices[i]
		key := Key(ms.Namespace, ms.Spec.ServiceName)
		v := judgeMeshService(meshServiceScope{ms: ms, svc: ix.services[key], slices: ix.slices[key], claimants: ix.claimants[key]})
		m.Verdicts[Ref{KindMeshService, ms.Namespace, ms.Name}] = v
		if !v.InForce() {
			last, ok := in.LastGood.MeshServices[Key(ms.Namespace, ms.Name)]
			if !ok || last.UID != ms.UID {
				continue
			}
			ms = &last
		}
		svc := ix.services[Key(ms.Namespace, ms.Spec.ServiceName)]
		if svc == nil {
			continue
		}
		s := &Service{
			Namespace: ms.Namespace, Name: ms.Name,
			Host:           fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, domain),
			ServiceName:    svc.Name,
			Subsets:        ms.Spec.Subsets,
			Allow:          ms.Spec.Allow,
			DefaultInbound: ix.defaultInbound(ms.Namespace, in.DefaultInbound),
			Generation:     ms.Generation,
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if ip != corev1.ClusterIPNone && ip != "" {
				s.ClusterIPs = append(s.ClusterIPs, ip)
			}
		}
		for _, p := range ms.Spec.Ports {
			for _, sp := range svc.Spec.Ports {
				if sp.Port != p.Port {
					continue
				}
				s.Ports = append(s.Ports, Port{Number: p.Port, Name: sp.Name, Protocol: p.Protocol,
					TargetName: sp.Name, TargetNumber: sp.TargetPort.IntVal})
			}
		}
		s.Endpoints, s.Starting = endpoints(ix, ix.slices[Key(svc.Namespace, svc.Name)], pa, trustDomain, m.Shaping)
		m.Services[Key(s.Namespace, s.Name)] = s
		// A copy: the next build must see this generation whatever becomes of
		// the input.
		m.Applied.MeshServices[Key(s.Namespace, s.Name)] = *ms.DeepCopy()
	}
	for i := range in.TrafficPolicies {
		tp := &in.TrafficPolicies[i]
		scope := ix.policyScope(tp)
		scope.inForce = func(name string) bool { return m.Services[Key(tp.Namespace, name)] != nil }
		v := judgeTrafficPolicy(scope)
		m.Verdicts[Ref{KindTrafficPolicy, tp.Namespace, tp.Name}] = v
		if !v.InForce() {
			last, ok := in.LastGood.TrafficPolicies[Key(tp.Namespace, tp.Name)]
			if !ok || last.UID != tp.UID {
				continue
			}
			tp = &last
		}
		s := m.Services[Key(tp.Namespace, tp.Spec.TargetRef.Name)]
		if s == nil {
			continue
		}
		kept := tp.DeepCopy()
		m.Applied.TrafficPolicies[Key(tp.Namespace, tp.Name)] = *kept
		s.Policies = append(s.Policies, Policy{Name: tp.Name, Generation: tp.Generation, Port: ptr.Deref(tp.Spec.TargetRef.Port, 0), Spec: kept.Spec,
			MirrorHosts: mirrorHosts(m, tp)})
	}
	for _, s := range m.Services {
		slices.SortFunc(s.Policies, func(a, b Policy) int { return cmp.Compare(a.Name, b.Name) })
	}
	for k := range m.Services {
		m.Order = append(m.Order, k)
	}
	slices.Sort(m.Order)
	m.restricted = m.restrictedServices()
	m.findConflicts()
	for _, key := range m.Order {
		s := m.Services[key]
		ref := Ref{KindMeshService, s.Namespace, s.Name}
		if v := m.Verdicts[ref]; v.InForce() {
			v.RulesEnforced = m.judgeEnforcement(s)
			m.Verdicts[ref] = v
		}
	}
	return m
}

// index finds the input's objects by the names others use for them.
type index struct {
	// services and slices by "<namespace>/<Service name>"; pods by
	// "<namespace>/<name>", and by namespace in podsIn; meshed are the
	// namespaces that opted into the mesh.
	services map[string]*corev1.Service
	slices   map[string][]*discoveryv1.EndpointSlice
	pods     map[string]*corev1.Pod
	podsIn   map[string][]*corev1.Pod
	meshed   []string
	// namespaces by name.
	namespaces map[string]*corev1.Namespace
	// nodes places each node by name.
	nodes map[string]Locality
	// meshServices by "<namespace>/<name>"; claimants, the MeshServices
	// naming each Service, by "<namespace>/<Service name>"; rivals, the
	// TrafficPolicies on each MeshService, by "<namespace>/<name>".
	meshServices map[string]*meshv1.MeshService
	claimants    map[string][]*meshv1.MeshService
	rivals       map[string][]*meshv1.TrafficPolicy
	// peerAuths by namespace, and their selectors (workload scope).
	peerAuths map[string][]*meshv1.PeerAuthentication
	selectors map[*meshv1.PeerAuthentication]parsedSelector
}

func newIndex(in Input) index {
	ix := index{services: make(map[string]*corev1.Service, len(in.Services)), slices: make(map[string][]*discoveryv1.EndpointSlice, len(in.Services)),
		pods: make(map[string]*corev1.Pod, len(in.Pods)), podsIn: map[string][]*corev1.Pod{},
		selectors:    map[*meshv1.PeerAuthentication]parsedSelector{},
		meshServices: make(map[string]*meshv1.MeshService, len(in.MeshServices)), claimants: make(map[string][]*meshv1.MeshService, len(in.MeshServices)),
		rivals: map[string][]*meshv1.TrafficPolicy{}, peerAuths: map[string][]*meshv1.PeerAuthentication{}, nodes: make(map[string]Locality, len(in.Nodes))}
	for _, n := range in.Nodes {
		if l := (Locality{Region: n.Labels[corev1.LabelTopologyRegion], Zone: n.Labels[corev1.LabelTopologyZone]}); l != (Locality{}) {
			ix.nodes[n.Name] = l
		}
	}
	for i := range in.Services {
		s := &in.Services[i]
		ix.services[Key(s.Namespace, s.Name)] = s
	}
	for i := range in.Pods {
		p := &in.Pods[i]
		ix.pods[Key(p.Namespace, p.Name)] = p
		ix.podsIn[p.Namespace] = append(ix.podsIn[p.Namespace], p)
	}
	ix.namespaces = make(map[string]*corev1.Namespace, len(in.Namespaces))
	for i := range in.Namespaces {
		ns := &in.Namespaces[i]
		ix.namespaces[ns.Name] = ns
		if ns.Labels[wire.LabelInject] == wire.InjectEnabled {
			ix.meshed = append(ix.meshed, ns.Name)
		}
	}
	for i := range in.EndpointSlices {
		sl := &in.EndpointSlices[i]
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := Key(sl.Namespace, name)
			ix.slices[k] = append(ix.slices[k], sl)
		}
	}
	for i := range in.MeshServices {
		ms := &in.MeshServices[i]
		ix.meshServices[Key(ms.Namespace, ms.Name)] = ms
		k := Key(ms.Namespace, ms.Spec.ServiceName)
		ix.claimants[k] = append(ix.claimants[k], ms)
	}
	for i := range in.TrafficPolicies {
		tp := &in.TrafficPolicies[i]
		k := Key(tp.Namespace, tp.Spec.TargetRef.Name)
		ix.rivals[k] = append(ix.rivals[k], tp)
	}
	for i := range in.PeerAuthentications {
		pa := &in.PeerAuthentications[i]
		ix.peerAuths[pa.Namespace] = append(ix.peerAuths[pa.Namespace], pa)
		if pa.Spec.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(pa.Spec.Selector.LabelSelector())
			ix.selectors[pa] = parsedSelector{sel: sel, err: err}
		}
	}
	return ix
}

// defaultInbound is the default inbound policy of a namespace's services:
// its label's, or the mesh's. A label that names no policy denies.
func (ix index) defaultInbound(namespace string, mesh wire.DefaultInbound) wire.DefaultInbound {
	if ns := ix.namespaces[namespace]; ns != nil {
		if v, ok := ns.Labels[wire.LabelDefaultInbound]; ok {
			d, err := wire.ParseDefaultInbound(v)
			if err != nil {
				return wire.DefaultInboundDeny
			}
			return d
		}
	}
	return cmp.Or(mesh, wire.DefaultInboundAll)
}

// localities places every pod on a node whose topology is known.
func (ix index) localities() map[string]Locality {
	out := map[string]Locality{}
	for key, p := range ix.pods {
		if l, ok := ix.nodes[p.Spec.NodeName]; ok {
			out[key] = l
		}
	}
	return out
}

// callers names the identity of every pod.
func (ix index) callers() map[string]Caller {
	out := make(map[string]Caller, len(ix.pods))
	for key, p := range ix.pods {
		out[key] = Caller{Namespace: p.Namespace, ServiceAccount: cmp.Or(p.Spec.ServiceAccountName, wire.DefaultServiceAccount)}
	}
	return out
}

// policyScope gathers what a TrafficPolicy's verdict depends on.
func (ix index) policyScope(tp *meshv1.TrafficPolicy) trafficPolicyScope {
	s := trafficPolicyScope{tp: tp, target: ix.meshServices[Key(tp.Namespace, tp.Spec.TargetRef.Name)],
		mirrors: map[string]*meshv1.MeshService{}, rivals: ix.rivals[Key(tp.Namespace, tp.Spec.TargetRef.Name)]}
	for _, route := range tp.Spec.HTTP {
		if route.Mirror != nil {
			if ms := ix.meshServices[Key(tp.Namespace, route.Mirror.Name)]; ms != nil {
				s.mirrors[route.Mirror.Name] = ms
			}
		}
	}
	return s
}

// endpoints flattens slices into endpoints: ready ones, and terminating
// ones that still serve (so connections drain instead of being cut); and,
// apart, the pods that are not ready yet. An address in two slices appears
// once. The PeerAuthentications that set a mode are added to shaping.
func endpoints(ix index, sls []*discoveryv1.EndpointSlice, pa *peerAuth, trustDomain string, shaping map[Ref]int64) (out, starting []Endpoint) {
	seen := map[string]bool{}
	for _, sl := range sls {
		ports := map[string]int32{}
		for _, p := range sl.Ports {
			if p.Port != nil {
				ports[deref(p.Name)] = *p.Port
			}
		}
		for _, ep := range sl.Endpoints {
			if len(ep.Addresses) == 0 || seen[ep.Addresses[0]] {
				continue
			}
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			serving := ep.Conditions.Serving == nil || *ep.Conditions.Serving
			isStarting := !ready && !terminating
			if !ready && !(terminating && serving) && !isStarting {
				continue
			}
			seen[ep.Addresses[0]] = true
			e := Endpoint{Address: ep.Addresses[0], Ports: ports, Ready: ready && !terminating, Terminating: terminating, Zone: deref(ep.Zone)}
			node := deref(ep.NodeName)
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				e.Pod = Key(ep.TargetRef.Namespace, ep.TargetRef.Name)
				if pod := ix.pods[e.Pod]; pod != nil {
					node = cmp.Or(node, pod.Spec.NodeName)
					e.Labels = pod.Labels
					e.Identity = wire.SPIFFEID(trustDomain, pod.Namespace, cmp.Or(pod.Spec.ServiceAccountName, wire.DefaultServiceAccount))
					var by []*meshv1.PeerAuthentication
					e.MTLS, e.PortMTLS, by = pa.modeOf(pod)
					for i, p := range by {
						e.ModeBy[i] = Ref{KindPeerAuthentication, p.Namespace, p.Name}
						shaping[e.ModeBy[i]] = p.Generation
					}
				}
			}
			if l, ok := ix.nodes[node]; ok {
				e.Zone, e.Region = cmp.Or(e.Zone, l.Zone), l.Region
			}
			switch {
			case !isStarting:
				out = append(out, e)
			case e.Pod != "":
				starting = append(starting, e)
			}
		}
	}
	byAddress := func(a, b Endpoint) int { return cmp.Compare(a.Address, b.Address) }
	slices.SortFunc(out, byAddress)
	slices.SortFunc(starting, byAddress)
	return out, starting
}

// InSubset says whether an endpoint belongs to a subset ("" is all).
func (s *Service) InSubset(e Endpoint, subset string) bool {
	if subset == "" {
		return true
	}
	for _, sub := range s.Subsets {
		if sub.Name == subset {
			return selects(sub.Labels, e.Labels)
		}
	}
	return false
}

// selects says whether every label of a subset's selector is on the
// endpoint (labels.SelectorFromSet semantics, without building a selector
// per endpoint).
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// PortOf returns the endpoint port that serves a service port.
func (e Endpoint) PortOf(p Port) (int32, bool) {
	if n, ok := e.Ports[p.TargetName]; ok {
		return n, true
	}
	if len(e.Ports) == 1 && p.TargetName == "" {
		for _, n := range e.Ports {
			return n, true
		}
	}
	return 0, false
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// mirrorHosts resolves each route's mirror to the host of the service in
// force behind the MeshService it names.
func mirrorHosts(m *Model, tp *meshv1.TrafficPolicy) []string {
	var out []string
	for i, r := range tp.Spec.HTTP {
		if r.Mirror == nil {
			continue
		}
		s := m.Services[Key(tp.Namespace, r.Mirror.Name)]
		if s == nil {
			continue
		}
		if out == nil {
			out = make([]string, len(tp.Spec.HTTP))
		}
		out[i] = s.Host
	}
	return out
}

// PodEndpoints iterates over the endpoints whose pods serve the service
// and so get its inbound configuration: ready, terminating and starting.
func (s *Service) PodEndpoints() iter.Seq[Endpoint] {
	return func(yield func(Endpoint) bool) {
		for _, list := range [][]Endpoint{s.Endpoints, s.Starting} {
			for _, e := range list {
				if !yield(e) {
					return
				}
			}
		}
	}
}
