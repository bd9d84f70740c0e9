package mesh

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// meshServiceScope is what a MeshService's verdict depends on.
type meshServiceScope struct {
	ms *meshv1.MeshService
	// svc is the Service, or nil when it does not exist.
	svc *corev1.Service
	// slices are the Service's EndpointSlices.
	slices []*discoveryv1.EndpointSlice
	// claimants are the MeshServices of the namespace (this one included)
	// that name the same Service.
	claimants []*meshv1.MeshService
}

func judgeMeshService(s meshServiceScope) Verdict {
	return Verdict{
		Generation:   s.ms.Generation,
		Accepted:     meshServiceAccepted(s),
		ResolvedRefs: meshServiceResolvedRefs(s),
		Endpoints:    countEndpoints(s.slices),
	}
}

// meshServiceAccepted: a MeshService is accepted unless an older one claims
// the same Service or a regular expression in it does not compile.
func meshServiceAccepted(s meshServiceScope) Check {
	ms := s.ms
	if winner := OldestFirst(s.claimants); len(winner) > 0 && winner[0].Name != ms.Name {
		return fail("spec.serviceName", meshv1.ReasonConflicted,
			"MeshService %q already puts Service %q into the mesh and is older; delete one of the two or change spec.serviceName",
			winner[0].Name, ms.Spec.ServiceName)
	}
	for i, rule := range ms.Spec.Allow {
		for j, src := range rule.From {
			// Admission refuses it; an object stored before that rule must
			// not widen to a ServiceAccount name in every namespace.
			if src.Namespace == "*" && src.ServiceAccount != "" {
				field := fmt.Sprintf("spec.allow[%d].from[%d].serviceAccount", i, j)
				return fail(field, meshv1.ReasonInvalid,
					"%s: cannot narrow namespace \"*\": a ServiceAccount named %q in any namespace would be let in; name its namespace",
					field, src.ServiceAccount)
			}
		}
		for j := range rule.Paths {
			if c, ok := checkPathMatch(fmt.Sprintf("spec.allow[%d].paths[%d]", i, j), &rule.Paths[j]); !ok {
				return c
			}
		}
	}
	return pass(meshv1.ReasonAccepted, "The MeshService is valid")
}

// meshServiceResolvedRefs: the Service must exist and have every port that
// spec.ports lists.
func meshServiceResolvedRefs(s meshServiceScope) Check {
	ms := s.ms
	if s.svc == nil {
		return fail("spec.serviceName", meshv1.ReasonServiceNotFound,
			"spec.serviceName: Service %q does not exist in namespace %q; create it or correct spec.serviceName",
			ms.Spec.ServiceName, ms.Namespace)
	}
	for i, p := range ms.Spec.Ports {
		if !slices.ContainsFunc(s.svc.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == p.Port }) {
			have := make([]string, 0, len(s.svc.Spec.Ports))
			for _, p := range s.svc.Spec.Ports {
				have = append(have, strconv.Itoa(int(p.Port)))
			}
			field := fmt.Sprintf("spec.ports[%d].port", i)
			return fail(field, meshv1.ReasonPortNotFound, "%s: Service %q has no port %d (its ports: %s)",
				field, ms.Spec.ServiceName, p.Port, strings.Join(have, ", "))
		}
	}
	return pass(meshv1.ReasonResolvedRefs, "Service %q found with all %d listed ports", ms.Spec.ServiceName, len(ms.Spec.Ports))
}

// countEndpoints counts a Service's endpoints across its slices. An
// endpoint that appears in several slices (one per address family) counts
// once. An endpoint without a ready condition counts as ready, as the
// EndpointSlice API says.
func countEndpoints(slices []*discoveryv1.EndpointSlice) meshv1.EndpointCounts {
	n := 0
	for _, sl := range slices {
		n += len(sl.Endpoints)
	}
	seen := make(map[endpointID]bool, n)
	var c meshv1.EndpointCounts
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			key := endpointKey(ep)
			if key == (endpointID{}) || seen[key] {
				continue
			}
			seen[key] = true
			c.Total++
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				c.Ready++
			}
		}
	}
	return c
}

// endpointID is what makes two endpoints one: the pod behind them, or
// their first address.
type endpointID struct {
	uid, address string
}

func endpointKey(ep discoveryv1.Endpoint) endpointID {
	if ep.TargetRef != nil && ep.TargetRef.UID != "" {
		return endpointID{uid: string(ep.TargetRef.UID)}
	}
	if len(ep.Addresses) > 0 {
		return endpointID{address: ep.Addresses[0]}
	}
	return endpointID{}
}
