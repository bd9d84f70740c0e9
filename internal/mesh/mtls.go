package mesh

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// DefaultMTLS is the mode of a workload that no PeerAuthentication covers.
const DefaultMTLS = meshv1.MTLSPermissive

// peerAuth holds the PeerAuthentications in force, by scope, to find the
// one that covers a pod: the narrowest wins (workload over namespace over
// mesh), and of two of one scope (a conflict the reconciler reports) the
// older.
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

func older(a, b *meshv1.PeerAuthentication) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

// newPeerAuth indexes the PeerAuthentications whose current generation
// was accepted.
func newPeerAuth(pas []meshv1.PeerAuthentication, meshNamespace string) *peerAuth {
	p := &peerAuth{meshNamespace: meshNamespace, namespace: map[string]*meshv1.PeerAuthentication{}, workload: map[string][]selected{}}
	for i := range pas {
		pa := &pas[i]
		if !inForce(pa.Status.Conditions, pa.Generation) {
			continue
		}
		if pa.Spec.Selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(pa.Spec.Selector)
			if err != nil {
				continue // refused at admission or by the reconciler
			}
			p.workload[pa.Namespace] = append(p.workload[pa.Namespace], selected{pa: pa, sel: sel})
			continue
		}
		if cur := p.namespace[pa.Namespace]; cur == nil || older(pa, cur) < 0 {
			p.namespace[pa.Namespace] = pa
		}
	}
	p.mesh = p.namespace[meshNamespace]
	for ns := range p.workload {
		slices.SortFunc(p.workload[ns], func(a, b selected) int { return older(a.pa, b.pa) })
	}
	return p
}

// modeOf returns a pod's mTLS mode and its per-port overrides (nil when
// there are none).
func (p *peerAuth) modeOf(pod *corev1.Pod) (meshv1.MTLSMode, map[int32]meshv1.MTLSMode) {
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
	for _, pa := range chain {
		if pa.Spec.Mode != "" {
			mode = pa.Spec.Mode
			break
		}
	}
	var ports map[int32]meshv1.MTLSMode
	if len(chain) > 0 && chain[0].Spec.Selector != nil && len(chain[0].Spec.PortLevel) > 0 {
		ports = make(map[int32]meshv1.MTLSMode, len(chain[0].Spec.PortLevel))
		for _, pl := range chain[0].Spec.PortLevel {
			ports[pl.Port] = pl.Mode
		}
	}
	return mode, ports
}

// ModeFor returns the endpoint's mTLS mode on one of its ports.
func (e Endpoint) ModeFor(port int32) meshv1.MTLSMode {
	if m, ok := e.PortMTLS[port]; ok {
		return m
	}
	return cmp.Or(e.MTLS, DefaultMTLS)
}

// SPIFFEID is a pod's identity, spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + cmp.Or(serviceAccount, "default")
}
