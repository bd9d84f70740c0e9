package cli

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
)

// Objects are what the analysis needs beyond the model: the cluster's
// ServiceAccounts ("<namespace>/<name>").
type Objects struct {
	ServiceAccounts map[string]bool
}

// Analyze looks for what is wrong in the mesh's objects, as the model
// judges them (m) and beyond: objects refused or not resolved, allow rules
// that cannot hold, routes to subsets without endpoints, STRICT services
// beside pods without a proxy, allow rules naming ServiceAccounts or
// namespaces that do not exist, PeerAuthentications that select no pod.
// Only objects in namespace are looked at, when it is set. Each finding
// names the object and the fix.
func Analyze(m *Mesh, o Objects, namespace string) []Finding {
	var out []Finding
	add := func(s Severity, obj, msg, fix string) { out = append(out, Finding{s, obj, msg, fix}) }
	in, model := m.Input, m.Model
	inScope := func(ns string) bool { return namespace == "" || ns == namespace }
	namespaces := map[string]bool{}
	for _, n := range in.Namespaces {
		namespaces[n.Name] = true
	}

	// Verdicts: what the model refuses, leaves unresolved, or cannot
	// enforce as written.
	refs := make([]mesh.Ref, 0, len(model.Verdicts))
	for r := range model.Verdicts {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b mesh.Ref) int { return strings.Compare(a.String(), b.String()) })
	for _, r := range refs {
		if !inScope(r.Namespace) {
			continue
		}
		v := model.Verdicts[r]
		obj := r.Kind + " " + r.Namespace + "/" + r.Name
		for _, c := range []mesh.Check{v.Accepted, v.ResolvedRefs} {
			if !c.OK {
				add(SeverityError, obj, fmt.Sprintf("%s (%s): %s", condition(c, v), c.Reason, c.Message), fixFor(r, c))
				break
			}
		}
		if c := v.RulesEnforced; v.InForce() && !c.OK && c.Reason != "" {
			add(SeverityError, obj, fmt.Sprintf("RulesEnforced=False (%s): %s", c.Reason, c.Message), fixFor(r, c))
		}
		if r.Kind == mesh.KindPeerAuthentication && v.InForce() && v.Scope == meshv1.ScopeWorkload && v.Workloads == 0 {
			add(SeverityError, obj, "its spec.selector selects no pod: it sets the mode of nothing", "fix spec.selector to match the pods' labels, or delete it")
		}
	}

	for _, key := range model.Order {
		s := model.Services[key]
		if !inScope(s.Namespace) {
			continue
		}
		obj := "MeshService " + key
		analyzeSubsets(s, add)
		analyzeStrict(in, s, obj, add)
	}

	// Allow rules naming identities that do not exist.
	for _, ms := range in.MeshServices {
		if !inScope(ms.Namespace) {
			continue
		}
		obj := "MeshService " + ms.Namespace + "/" + ms.Name
		for i, rule := range ms.Spec.Allow {
			for j, src := range rule.From {
				field := fmt.Sprintf("spec.allow[%d].from[%d]", i, j)
				ns, sa := src.Namespace, src.ServiceAccount
				if src.Identity != "" {
					prefix := wire.SPIFFEDomainPrefix(model.TrustDomain)
					path, ok := strings.CutPrefix(src.Identity, prefix)
					if !ok {
						add(SeverityError, obj, fmt.Sprintf("%s names %s, outside the mesh's trust domain %q: no workload has it", field, src.Identity, model.TrustDomain),
							"name an identity of the trust domain ("+prefix+"/ns/<namespace>/sa/<serviceaccount>)")
						continue
					}
					if ns, sa, ok = wire.ParseSPIFFEPath("/" + path); !ok {
						continue
					}
				}
				if ns == "" || ns == "*" {
					continue
				}
				switch {
				case !namespaces[ns]:
					add(SeverityError, obj, fmt.Sprintf("%s names namespace %s, which does not exist: the rule lets nobody in from there", field, ns),
						"fix the namespace's name in "+field+", or create the namespace")
				case sa != "" && o.ServiceAccounts != nil && !o.ServiceAccounts[ns+"/"+sa]:
					add(SeverityError, obj, fmt.Sprintf("%s names ServiceAccount %s/%s, which does not exist: the rule lets nobody in by it", field, ns, sa),
						"fix the ServiceAccount's name in "+field+", or create it (kubectl create serviceaccount "+sa+" -n "+ns+")")
				}
			}
		}
	}
	return out
}

// condition is the condition a failed check is written as.
func condition(c mesh.Check, v mesh.Verdict) string {
	if c == v.Accepted {
		return "Accepted=False"
	}
	return "ResolvedRefs=False"
}

// fixFor says what to do about a failed check.
func fixFor(r mesh.Ref, c mesh.Check) string {
	switch c.Reason {
	case meshv1.ReasonConflicted:
		return "keep one: delete the newer " + r.Kind + " or make it cover something else (the older one wins)"
	case meshv1.ReasonTargetNotFound:
		return "create the MeshService " + c.Field + " names, or fix " + c.Field
	case meshv1.ReasonServiceNotFound:
		return "create the Service, or fix " + c.Field
	case meshv1.ReasonPortNotFound, meshv1.ReasonSubsetNotFound, meshv1.ReasonMirrorNotFound, meshv1.ReasonProtocolMismatch, meshv1.ReasonRefNotInForce:
		return "fix " + c.Field + " to name what exists"
	case meshv1.ReasonNotStrict:
		return "make the endpoints STRICT with a PeerAuthentication (mode: STRICT) over the service's pods, or remove the allow rules"
	case meshv1.ReasonRulesConflict:
		return "give both MeshServices the same allow rules for the pod port, or have one stop targeting it"
	}
	if c.Field != "" {
		return "fix " + c.Field + " (kubectl describe " + strings.ToLower(r.Kind) + " " + r.Name + " -n " + r.Namespace + ")"
	}
	return "kubectl describe " + strings.ToLower(r.Kind) + " " + r.Name + " -n " + r.Namespace
}

// analyzeSubsets finds the subsets without a ready endpoint: an error
// where a route of the policy in force sends calls there (they fail), a
// warning otherwise.
func analyzeSubsets(s *mesh.Service, add func(Severity, string, string, string)) {
	for _, sub := range s.Subsets {
		n := 0
		for _, e := range s.Endpoints {
			if e.Ready && s.InSubset(e, sub.Name) {
				n++
			}
		}
		if n > 0 {
			continue
		}
		routed := false
		for _, p := range s.Policies {
			for i, rt := range p.Spec.HTTP {
				for _, b := range rt.Backends {
					if b.Subset != sub.Name || b.Weight == 0 {
						continue
					}
					routed = true
					add(SeverityError, "TrafficPolicy "+s.Namespace+"/"+p.Name,
						fmt.Sprintf("spec.http[%d] sends weight %d to subset %s of MeshService %s, which has no ready endpoint: those calls fail", i, b.Weight, sub.Name, s.Name),
						fmt.Sprintf("run pods with the subset's labels %v behind Service %s, or route that weight elsewhere", sub.Labels, s.ServiceName))
				}
			}
		}
		if !routed {
			add(SeverityWarning, "MeshService "+s.Namespace+"/"+s.Name, fmt.Sprintf("subset %s has no ready endpoint (no ready pod has the labels %v)", sub.Name, sub.Labels),
				"run pods with those labels, or remove the subset")
		}
	}
}

// analyzeStrict finds, for a service whose endpoints take mTLS only,
// pods of its namespace that run without a proxy: weft's clients are the
// only callers that speak mTLS to it.
func analyzeStrict(in mesh.Input, s *mesh.Service, obj string, add func(Severity, string, string, string)) {
	var by []string
	strict := false
	for _, e := range s.Endpoints {
		for _, p := range s.Ports {
			if n, ok := e.PortOf(p); ok && e.ModeFor(n) == meshv1.MTLSStrict {
				strict = true
				for _, r := range e.ModeBy {
					if r.Kind != "" && !slices.Contains(by, r.Namespace+"/"+r.Name) {
						by = append(by, r.Namespace+"/"+r.Name)
					}
				}
			}
		}
	}
	if !strict {
		return
	}
	var unmeshed []string
	for _, p := range in.Pods {
		if p.Namespace != s.Namespace || meshed(&p) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		unmeshed = append(unmeshed, p.Name)
	}
	if len(unmeshed) == 0 {
		return
	}
	slices.Sort(unmeshed)
	shown := unmeshed
	if len(shown) > 5 {
		shown = append(slices.Clone(shown[:5]), fmt.Sprintf("and %d more", len(unmeshed)-5))
	}
	add(SeverityError, obj, fmt.Sprintf("its endpoints take mTLS only (STRICT, set by PeerAuthentication %s), and pods of its namespace run without a proxy (%s): any call they make to it fails the TLS handshake, and any of them that serves it refuses the mesh's mTLS",
		strings.Join(by, ", "), strings.Join(shown, ", ")),
		"mesh those pods (label the namespace "+wire.LabelInject+"="+wire.InjectEnabled+", drop their "+wire.LabelInject+"=false label, and restart them), or let plain text in on the port with a PeerAuthentication (portLevelMtls: PERMISSIVE)")
}

// meshed says whether a pod was injected (a sidecar or a proxyless gRPC
// bootstrap).
func meshed(p *corev1.Pod) bool {
	_, ok := p.Annotations[inject.AnnotationInjected]
	return ok
}
