package mesh

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// DefaultMTLS is the mode of a workload that no PeerAuthentication covers.
const DefaultMTLS = meshv1.MTLSPermissive

// peerAuth holds the PeerAuthentications in force, by scope, to find the
// one that covers a pod: the narrowest wins (workload over namespace over
// mesh). Of two of one scope the verdicts accept only the older (Older),
// except workload policies whose pods are disjoint.
type peerAuth struct {
	meshNamespace string
	mesh          *meshv1.PeerAuthentication
	namespace     map[string]*meshv1.PeerAuthentication
	workload      map[string][]selected
}

type selected struct {
	pa  *meshv1.PeerAuthentication
	sel labels.Selector
}

// newPeerAuth indexes the PeerAuthentications whose current generation
// the verdicts accepted; selectorOf gives a workload policy's parsed
// selector (the verdicts refuse those that do not parse).
func newPeerAuth(pas []*meshv1.PeerAuthentication, selectorOf func(*meshv1.PeerAuthentication) labels.Selector, meshNamespace string) *peerAuth {
	p := &peerAuth{meshNamespace: meshNamespace, namespace: map[string]*meshv1.PeerAuthentication{}, workload: map[string][]selected{}}
	for _, pa := range pas {
		if pa.Spec.Selector != nil {
			sel := selectorOf(pa)
			p.workload[pa.Namespace] = append(p.workload[pa.Namespace], selected{pa: pa, sel: sel})
			continue
		}
		if cur := p.namespace[pa.Namespace]; cur == nil || Older(pa, cur) < 0 {
			p.namespace[pa.Namespace] = pa
		}
	}
	p.mesh = p.namespace[meshNamespace]
	for ns := range p.workload {
		slices.SortFunc(p.workload[ns], func(a, b selected) int { return Older(a.pa, b.pa) })
	}
	return p
}

// modeOf returns a pod's mTLS mode, its per-port overrides (nil when there
// are none), and the PeerAuthentications that set them.
func (p *peerAuth) modeOf(pod *corev1.Pod) (meshv1.MTLSMode, map[int32]meshv1.MTLSMode, []*meshv1.PeerAuthentication) {
	var chain []*meshv1.PeerAuthentication
	for _, w := range p.workload[pod.Namespace] {
		if w.sel.Matches(labels.Set(pod.Labels)) {
			chain = append(chain, w.pa)
			break
		}
	}
	if pa := p.namespace[pod.Namespace]; pa != nil && pod.Namespace != p.meshNamespace {
		chain = append(chain, pa)
	}
	if p.mesh != nil {
		chain = append(chain, p.mesh)
	}
	mode := DefaultMTLS
	var by []*meshv1.PeerAuthentication
	for _, pa := range chain {
		if pa.Spec.Mode != "" {
			mode = pa.Spec.Mode
			by = append(by, pa)
			break
		}
	}
	var ports map[int32]meshv1.MTLSMode
	if len(chain) > 0 && chain[0].Spec.Selector != nil && len(chain[0].Spec.PortLevel) > 0 {
		ports = make(map[int32]meshv1.MTLSMode, len(chain[0].Spec.PortLevel))
		for _, pl := range chain[0].Spec.PortLevel {
			ports[pl.Port] = pl.Mode
		}
		if len(by) == 0 || by[0] != chain[0] {
			by = append(by, chain[0])
		}
	}
	return mode, ports, by
}

// ModeFor returns the endpoint's mTLS mode on one of its ports.
func (e Endpoint) ModeFor(port int32) meshv1.MTLSMode {
	if m, ok := e.PortMTLS[port]; ok {
		return m
	}
	return cmp.Or(e.MTLS, DefaultMTLS)
}
