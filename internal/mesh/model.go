// Package mesh holds weft's model of the mesh: an immutable value built
// from the objects the controllers watch, by a pure function. Translation
// to xDS reads only this model.
package mesh

import (
	"cmp"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// Input is what the model is built from: the informer caches' contents.
type Input struct {
	ClusterDomain   string
	Services        []corev1.Service
	EndpointSlices  []discoveryv1.EndpointSlice
	Pods            []corev1.Pod
	MeshServices    []meshv1.MeshService
	TrafficPolicies []meshv1.TrafficPolicy
	// PeerAuthentications set each pod's mTLS mode; those in force (their
	// current generation accepted) count.
	PeerAuthentications []meshv1.PeerAuthentication
	// MeshNamespace holds the mesh-wide PeerAuthentication (default
	// weft-system); TrustDomain names identities (default cluster.local).
	MeshNamespace string
	TrustDomain   string
	// LastGood is what the previous model applied (its Applied): a
	// MeshService or TrafficPolicy whose current generation is refused or
	// not yet reconciled keeps its last good generation in force.
	LastGood Applied
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
}

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
	// Allow is who may call the service (empty: every caller).
	Allow []meshv1.AllowRule
	// Endpoints are the Service's endpoints that are ready or
	// terminating, sorted by address.
	Endpoints []Endpoint
	// Routes come from the accepted TrafficPolicy; nil routes means all
	// traffic goes to all endpoints.
	Routes []Route
	// Generation is the MeshService's metadata.generation in the model;
	// Policy and PolicyGeneration name the TrafficPolicy in force, if any.
	Generation       int64
	Policy           string
	PolicyGeneration int64
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
	Zone   string
	// Identity is the pod's SPIFFE ID ("" without a pod); MTLS its mTLS
	// mode and PortMTLS the overrides per pod port (see ModeFor).
	Identity string
	MTLS     meshv1.MTLSMode
	PortMTLS map[int32]meshv1.MTLSMode
	// Ready endpoints take new traffic; terminating ones only drain.
	Ready       bool
	Terminating bool
}

// Route is one HTTP route of the service's policy.
type Route struct {
	Name     string
	Matches  []meshv1.HTTPMatch
	Backends []meshv1.WeightedBackend
}

// Key is a service's map key.
func Key(namespace, name string) string { return namespace + "/" + name }

// Build makes the model from its input. It applies a MeshService only when
// its Accepted and ResolvedRefs conditions are True for its generation (what
// the reconcilers decided), and a TrafficPolicy likewise: resources that
// cannot be applied leave nothing half-applied in the model. When the
// current generation is refused, or not reconciled yet, the last good
// generation (in.LastGood) stays in force, so that a bad edit, or the
// moment before the reconciler has looked at a good one, changes no
// traffic.
func Build(in Input) *Model {
	domain := cmp.Or(in.ClusterDomain, "cluster.local")
	pa := newPeerAuth(in.PeerAuthentications, cmp.Or(in.MeshNamespace, "weft-system"))
	trustDomain := cmp.Or(in.TrustDomain, "cluster.local")
	svcs := map[string]*corev1.Service{}
	for i := range in.Services {
		s := &in.Services[i]
		svcs[Key(s.Namespace, s.Name)] = s
	}
	pods := map[string]*corev1.Pod{}
	for i := range in.Pods {
		p := &in.Pods[i]
		pods[Key(p.Namespace, p.Name)] = p
	}
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for i := range in.EndpointSlices {
		sl := &in.EndpointSlices[i]
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			k := Key(sl.Namespace, name)
			slicesBySvc[k] = append(slicesBySvc[k], sl)
		}
	}

	m := &Model{Services: map[string]*Service{}, Applied: Applied{MeshServices: map[string]meshv1.MeshService{}, TrafficPolicies: map[string]meshv1.TrafficPolicy{}}}
	for i := range in.MeshServices {
		ms := &in.MeshServices[i]
		if !inForce(ms.Status.Conditions, ms.Generation) {
			last, ok := in.LastGood.MeshServices[Key(ms.Namespace, ms.Name)]
			if !ok || last.UID != ms.UID {
				continue
			}
			ms = &last
		}
		svc := svcs[Key(ms.Namespace, ms.Spec.ServiceName)]
		if svc == nil {
			continue
		}
		s := &Service{
			Namespace: ms.Namespace, Name: ms.Name,
			Host:        fmt.Sprintf("%s.%s.svc.%s", svc.Name, svc.Namespace, domain),
			ServiceName: svc.Name,
			Subsets:     ms.Spec.Subsets,
			Allow:       ms.Spec.Allow,
			Generation:  ms.Generation,
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
		s.Endpoints = endpoints(slicesBySvc[Key(svc.Namespace, svc.Name)], pods, pa, trustDomain)
		m.Services[Key(s.Namespace, s.Name)] = s
		// A copy: the next build must see this generation whatever becomes of
		// the input.
		m.Applied.MeshServices[Key(s.Namespace, s.Name)] = *ms.DeepCopy()
	}
	for i := range in.TrafficPolicies {
		tp := &in.TrafficPolicies[i]
		if !inForce(tp.Status.Conditions, tp.Generation) {
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
		m.Applied.TrafficPolicies[Key(tp.Namespace, tp.Name)] = *tp.DeepCopy()
		s.Policy, s.PolicyGeneration = tp.Name, tp.Generation
		for _, r := range tp.Spec.HTTP {
			s.Routes = append(s.Routes, Route{Name: r.Name, Matches: r.Matches, Backends: r.Backends})
		}
	}
	for k := range m.Services {
		m.Order = append(m.Order, k)
	}
	slices.Sort(m.Order)
	return m
}

// inForce says whether a resource's reconciler accepted and resolved its
// current generation.
func inForce(conds []metav1.Condition, gen int64) bool {
	for _, t := range []string{meshv1.ConditionAccepted, meshv1.ConditionResolvedRefs} {
		c := meta.FindStatusCondition(conds, t)
		if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != gen {
			return false
		}
	}
	return true
}

// endpoints flattens slices into endpoints: ready ones, and terminating
// ones that still serve (so connections drain instead of being cut). An
// address in two slices appears once.
func endpoints(sls []*discoveryv1.EndpointSlice, pods map[string]*corev1.Pod, pa *peerAuth, trustDomain string) []Endpoint {
	seen := map[string]bool{}
	var out []Endpoint
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
			if !ready && !(terminating && serving) {
				continue
			}
			seen[ep.Addresses[0]] = true
			e := Endpoint{Address: ep.Addresses[0], Ports: ports, Ready: ready && !terminating, Terminating: terminating, Zone: deref(ep.Zone)}
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				e.Pod = Key(ep.TargetRef.Namespace, ep.TargetRef.Name)
				if pod := pods[e.Pod]; pod != nil {
					e.Labels = pod.Labels
					e.Identity = SPIFFEID(trustDomain, pod.Namespace, pod.Spec.ServiceAccountName)
					e.MTLS, e.PortMTLS = pa.modeOf(pod)
				}
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return out
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
