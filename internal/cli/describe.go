package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/acks"
)

// Shaping is one object that shapes a pod's proxy configuration.
type Shaping struct {
	Ref mesh.Ref
	// InForce is the generation the model applies (0 when the model does
	// not apply it now); Current the object's metadata.generation (0 when
	// it is gone); Acknowledged the generation the proxy last acknowledged
	// configuration from (0: none, or no proxy is connected).
	InForce, Current, Acknowledged int64
	// Refused says why the model does not apply the current generation,
	// when it does not.
	Refused string
}

// ServedPort is a port of the pod that a MeshService targets.
type ServedPort struct {
	Service  mesh.Ref
	Port     mesh.Port
	PodPort  int32
	Mode     meshv1.MTLSMode
	ModeBy   []mesh.Ref
	Policy   string
	Conflict bool
	// Rules describe who may call, one line per allow rule (or the
	// default inbound policy).
	Rules []string
}

// Callee is a MeshService the pod's identity may call, or is kept out of.
type Callee struct {
	Service mesh.Ref
	Host    string
	// Because says which rule lets the caller in, or why it is kept out.
	Because string
	// Policies are the TrafficPolicies in force on it; ModeBy the
	// PeerAuthentications that set its endpoints' mTLS modes.
	Policies []string
	ModeBy   []mesh.Ref
}

// Description is what weft describe says of a pod.
type Description struct {
	Pod            string
	ServiceAccount string
	Identity       string
	// Proxy is what the xDS server says of the pod's proxy (nil when it
	// is not connected).
	Proxy    *ProxyConfig
	Settings string
	Serves   []ServedPort
	MayCall  []Callee
	KeptOut  []Callee
	// Shaped are the objects that shape the proxy's configuration, by the
	// model and by what the proxy acknowledged, sorted.
	Shaped []Shaping
}

// Describe says what shapes the configuration of a pod's proxy
// ("<namespace>/<name>"): the MeshServices it serves (their allow rules,
// the TrafficPolicy in force on the port, the PeerAuthentications that set
// its mode), the services its identity may call (their TrafficPolicies and
// the PeerAuthentications behind their endpoints' TLS) and those that keep
// it out; and each shaping object's generation, in force and acknowledged
// by the proxy (pc, nil when it is not connected).
func Describe(m *Mesh, pod string, pc *ProxyConfig) (*Description, error) {
	ns, name, _ := strings.Cut(pod, "/")
	idx := slices.IndexFunc(m.Input.Pods, func(p corev1.Pod) bool { return p.Namespace == ns && p.Name == name })
	if idx < 0 {
		return nil, fmt.Errorf("pod %s not found", pod)
	}
	model := m.Model
	caller := model.CallerOf(pod)
	d := &Description{Pod: pod, ServiceAccount: caller.ServiceAccount, Identity: caller.ID(model.TrustDomain), Proxy: pc, Settings: m.Settings}

	// What the pod serves: its own configuration (inbound).
	own := acks.Stamp{}
	for _, key := range model.Order {
		s := model.Services[key]
		ref := mesh.Ref{Kind: mesh.KindMeshService, Namespace: s.Namespace, Name: s.Name}
		for _, p := range s.Ports {
			for e := range s.PodEndpoints() {
				n, ok := e.PortOf(p)
				if !ok || e.Pod != pod {
					continue
				}
				sp := ServedPort{Service: ref, Port: p, PodPort: n, Mode: e.ModeFor(n), Conflict: model.RulesConflict(pod, n), Rules: rulesOf(s, p)}
				own[ref] = s.Generation
				if pol := s.PolicyFor(p.Number); pol != nil {
					sp.Policy = pol.Name
					own[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: s.Namespace, Name: pol.Name}] = pol.Generation
				}
				for _, r := range e.ModeBy {
					if r.Kind != "" {
						sp.ModeBy = append(sp.ModeBy, r)
						own[r] = model.Shaping[r]
					}
				}
				d.Serves = append(d.Serves, sp)
				break
			}
		}
	}
	// What its identity may call: the scope it is sent.
	scope := model.ScopeOf(caller)
	for _, key := range model.Order {
		s := model.Services[key]
		c := Callee{Service: mesh.Ref{Kind: mesh.KindMeshService, Namespace: s.Namespace, Name: s.Name}, Host: s.Host}
		if !slices.Contains(scope.Services, key) {
			c.Because = keptOutBecause(model, caller, s)
			d.KeptOut = append(d.KeptOut, c)
			continue
		}
		c.Because = letInBecause(model, caller, s)
		for _, p := range s.Policies {
			c.Policies = append(c.Policies, p.Name)
		}
		for _, e := range s.Endpoints {
			for _, r := range e.ModeBy {
				if r.Kind != "" && !slices.Contains(c.ModeBy, r) {
					c.ModeBy = append(c.ModeBy, r)
				}
			}
		}
		slices.SortFunc(c.ModeBy, func(a, b mesh.Ref) int { return cmp.Compare(a.String(), b.String()) })
		d.MayCall = append(d.MayCall, c)
	}
	// The objects that shape it: what its scope's set and its own set are
	// made from (the stamps the xDS server records), and what it
	// acknowledged.
	shaped := acks.StampOf(model, scope.Services)
	for r, g := range own {
		shaped[r] = g
	}
	seen := map[string]bool{}
	for r, g := range shaped {
		seen[r.String()] = true
		d.Shaped = append(d.Shaped, shapingOf(m, r, g, pc))
	}
	if pc != nil {
		for key := range pc.Acknowledged {
			if seen[key] {
				continue
			}
			r, ok := parseRef(key)
			if !ok {
				continue
			}
			d.Shaped = append(d.Shaped, shapingOf(m, r, 0, pc))
		}
	}
	slices.SortFunc(d.Shaped, func(a, b Shaping) int { return cmp.Compare(a.Ref.String(), b.Ref.String()) })
	return d, nil
}

// shapingOf is one shaping object with its generations.
func shapingOf(m *Mesh, r mesh.Ref, inForce int64, pc *ProxyConfig) Shaping {
	sh := Shaping{Ref: r, InForce: inForce, Current: currentGeneration(m.Input, r)}
	if pc != nil {
		sh.Acknowledged = pc.Acknowledged[r.String()]
	}
	if v, ok := m.Model.Verdicts[r]; ok && !v.InForce() {
		check := v.Accepted
		if check.OK {
			check = v.ResolvedRefs
		}
		sh.Refused = check.Reason + ": " + check.Message
	}
	return sh
}

// currentGeneration is an object's metadata.generation in the input (0
// when it is not there).
func currentGeneration(in mesh.Input, r mesh.Ref) int64 {
	switch r.Kind {
	case mesh.KindMeshService:
		for _, o := range in.MeshServices {
			if o.Namespace == r.Namespace && o.Name == r.Name {
				return o.Generation
			}
		}
	case mesh.KindTrafficPolicy:
		for _, o := range in.TrafficPolicies {
			if o.Namespace == r.Namespace && o.Name == r.Name {
				return o.Generation
			}
		}
	case mesh.KindPeerAuthentication:
		for _, o := range in.PeerAuthentications {
			if o.Namespace == r.Namespace && o.Name == r.Name {
				return o.Generation
			}
		}
	}
	return 0
}

// parseRef reads "<Kind>/<namespace>/<name>".
func parseRef(s string) (mesh.Ref, bool) {
	parts := strings.SplitN(s, "/", 3)
	if len(parts) != 3 {
		return mesh.Ref{}, false
	}
	return mesh.Ref{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, true
}

// rulesOf describes who may call a service's port.
func rulesOf(s *mesh.Service, p mesh.Port) []string {
	if len(s.Allow) == 0 {
		return []string{fmt.Sprintf("no allow rules: the default inbound policy %q decides (%s)", s.DefaultInbound, defaultInboundMeaning(s.DefaultInbound))}
	}
	var out []string
	for i, r := range s.Allow {
		if len(r.Ports) > 0 && !slices.Contains(r.Ports, p.Number) {
			continue
		}
		line := fmt.Sprintf("spec.allow[%d]: from %s", i, sources(r.From))
		if len(r.Paths) > 0 || len(r.Methods) > 0 {
			var what []string
			for _, pm := range r.Paths {
				what = append(what, string(pm.Type)+" "+pm.Value)
			}
			for _, m := range r.Methods {
				what = append(what, string(m))
			}
			line += "; only " + strings.Join(what, ", ")
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		out = append(out, "no allow rule names this port: it refuses every caller")
	}
	return out
}

func defaultInboundMeaning(d wire.DefaultInbound) string {
	switch d {
	case wire.DefaultInboundNamespace:
		return "the mesh identities of its own namespace"
	case wire.DefaultInboundDeny:
		return "nobody"
	}
	return "every caller"
}

func sources(from []meshv1.Source) string {
	var out []string
	for _, s := range from {
		switch {
		case s.Identity != "":
			out = append(out, s.Identity)
		case s.Namespace == "*":
			out = append(out, "any mesh identity")
		case s.ServiceAccount != "":
			out = append(out, s.Namespace+"/"+s.ServiceAccount)
		default:
			out = append(out, "namespace "+s.Namespace)
		}
	}
	return strings.Join(out, ", ")
}

// letInBecause says which rule lets a caller call a service.
func letInBecause(m *mesh.Model, c mesh.Caller, s *mesh.Service) string {
	if len(s.Allow) == 0 {
		return fmt.Sprintf("no allow rules; the default inbound policy %q lets it in", s.DefaultInbound)
	}
	for i, r := range s.Allow {
		for _, src := range r.From {
			if mesh.SourceAdmits(src, c, m.TrustDomain) {
				return fmt.Sprintf("spec.allow[%d] names it (from %s)", i, sources(r.From))
			}
		}
	}
	return "the route of another service in scope mirrors to it"
}

// keptOutBecause says why a caller may not call a service.
func keptOutBecause(_ *mesh.Model, c mesh.Caller, s *mesh.Service) string {
	if c.Anonymous() {
		return "the pod has no mesh identity the model knows"
	}
	if len(s.Allow) == 0 {
		return fmt.Sprintf("no allow rules, and the default inbound policy %q keeps it out", s.DefaultInbound)
	}
	return fmt.Sprintf("none of its %d allow rules names %s/%s", len(s.Allow), c.Namespace, c.ServiceAccount)
}

// WriteDescription prints a description.
func WriteDescription(out io.Writer, d *Description) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "Pod:\t%s\n", d.Pod)
	fmt.Fprintf(w, "Identity:\t%s (ServiceAccount %s)\n", d.Identity, d.ServiceAccount)
	if pc := d.Proxy; pc != nil {
		var states []string
		for _, tc := range pc.Types {
			if tc.Name == "secrets" {
				continue
			}
			states = append(states, tc.Name+" "+tc.Status)
		}
		fmt.Fprintf(w, "Proxy:\t%s, %s, connected: %s\n", pc.Node, pc.Flavour, strings.Join(states, ", "))
		switch {
		case pc.CertExpiry != "":
			fmt.Fprintf(w, "Certificate:\t%s, delivered by %s, expires %s\n", cmpOr(pc.Identity, d.Identity), pc.CertDelivery, pc.CertExpiry)
		case pc.Identity != "":
			fmt.Fprintf(w, "Certificate:\tnone served by weft; the stream proved %s\n", pc.Identity)
		default:
			fmt.Fprintf(w, "Certificate:\tnone served by weft (the xDS server does not authenticate proxies, or serves no certificate)\n")
		}
	} else {
		fmt.Fprintf(w, "Proxy:\tnot connected to this xDS server (nothing acknowledged to compare)\n")
	}
	fmt.Fprintf(w, "Model:\tbuilt from the cluster's objects with the settings of %s\n", d.Settings)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nServes:")
	if len(d.Serves) == 0 {
		fmt.Fprintln(out, "  nothing: no MeshService port targets this pod")
	}
	for _, sp := range d.Serves {
		fmt.Fprintf(out, "  MeshService %s/%s port %d (%s) on pod port %d, mTLS %s", sp.Service.Namespace, sp.Service.Name, sp.Port.Number, sp.Port.Protocol, sp.PodPort, sp.Mode)
		if len(sp.ModeBy) > 0 {
			fmt.Fprintf(out, " (set by %s)", refList(sp.ModeBy))
		} else {
			fmt.Fprint(out, " (no PeerAuthentication covers it)")
		}
		fmt.Fprintln(out)
		if sp.Conflict {
			fmt.Fprintln(out, "    another MeshService with different allow rules targets this pod port: it refuses every caller")
		}
		for _, r := range sp.Rules {
			fmt.Fprintf(out, "    %s\n", r)
		}
		if sp.Policy != "" {
			fmt.Fprintf(out, "    TrafficPolicy %s/%s is in force on the port (its rate limit applies here)\n", sp.Service.Namespace, sp.Policy)
		}
	}
	fmt.Fprintln(out, "\nMay call:")
	if len(d.MayCall) == 0 {
		fmt.Fprintln(out, "  no MeshService")
	}
	for _, c := range d.MayCall {
		fmt.Fprintf(out, "  MeshService %s/%s (%s): %s\n", c.Service.Namespace, c.Service.Name, c.Host, c.Because)
		for _, p := range c.Policies {
			fmt.Fprintf(out, "    TrafficPolicy %s/%s shapes the calls\n", c.Service.Namespace, p)
		}
		if len(c.ModeBy) > 0 {
			fmt.Fprintf(out, "    its endpoints' mTLS is set by %s\n", refList(c.ModeBy))
		}
	}
	if len(d.KeptOut) > 0 {
		fmt.Fprintln(out, "\nKept out of (not sent to this proxy):")
		for _, c := range d.KeptOut {
			fmt.Fprintf(out, "  MeshService %s/%s: %s\n", c.Service.Namespace, c.Service.Name, c.Because)
		}
	}
	fmt.Fprintln(out, "\nShaped by:")
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  KIND\tOBJECT\tIN FORCE\tCURRENT\tACKNOWLEDGED\tNOTE")
	for _, s := range d.Shaped {
		ack := "-"
		switch {
		case d.Proxy == nil:
		case s.Acknowledged == 0:
			ack = "no"
		case s.Acknowledged == s.InForce:
			ack = fmt.Sprintf("yes (%d)", s.Acknowledged)
		default:
			ack = fmt.Sprintf("generation %d", s.Acknowledged)
		}
		note := ""
		switch {
		case s.Refused != "":
			note = "current generation refused: " + s.Refused
		case s.InForce == 0:
			note = "acknowledged, not in force in the model now"
		case s.Current == 0:
			note = "deleted"
		}
		fmt.Fprintf(w, "  %s\t%s/%s\t%s\t%s\t%s\t%s\n", s.Ref.Kind, s.Ref.Namespace, s.Ref.Name, genOr(s.InForce), genOr(s.Current), ack, note)
	}
	return w.Flush()
}

func genOr(g int64) string {
	if g == 0 {
		return "-"
	}
	return fmt.Sprint(g)
}

func refList(refs []mesh.Ref) string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Kind+" "+r.Namespace+"/"+r.Name)
	}
	return strings.Join(out, ", ")
}

// DescribeOptions say where weft describe reads from.
type DescribeOptions struct {
	// Addr is the xDS server's client status address ("" to ask no xDS
	// server).
	Addr           string
	Pod, Namespace string
	Controller     Controller
}

// DescribePod reads the mesh's objects and the pod's proxy status and
// describes the pod. A proxy that is not connected is not an error.
func DescribePod(ctx context.Context, c client.Reader, o DescribeOptions) (*Description, error) {
	m, err := LoadMesh(ctx, c, o.Controller)
	if err != nil {
		return nil, err
	}
	var pc *ProxyConfig
	if o.Addr != "" {
		if cc, err := FetchProxy(ctx, o.Addr, wire.NodeID(o.Pod, o.Namespace)); err == nil {
			if pc, err = ParseProxyConfig(cc); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, ErrNotConnected) {
			return nil, err
		}
	}
	return Describe(m, mesh.Key(o.Namespace, o.Pod), pc)
}
