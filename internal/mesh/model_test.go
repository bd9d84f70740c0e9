package mesh_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

func weights(s *mesh.Service) []int32 {
	var out []int32
	for _, p := range s.Policies {
		for _, r := range p.Spec.HTTP {
			for _, b := range r.Backends {
				out = append(out, b.Weight)
			}
		}
	}
	return out
}

// policyGeneration is the generation of the service's one policy.
func policyGeneration(s *mesh.Service) int64 {
	if len(s.Policies) != 1 {
		return 0
	}
	return s.Policies[0].Generation
}

// An edit that is refused leaves the last good generation of a
// TrafficPolicy and of a MeshService in force, and its verdict says why and
// which field; one accepted takes over at once; a new object of the same
// name does not inherit.
func TestLastGoodGenerationStaysInForce(t *testing.T) {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080))
	in.TrafficPolicies[0].UID, in.MeshServices[0].UID = types.UID("tp-1"), types.UID("ms-1")
	good := mesh.Build(in)
	s := good.Services["bookinfo/reviews"]
	want := weights(s)
	if len(want) == 0 {
		t.Fatal("the fixture's policy is not in force")
	}
	gen := in.TrafficPolicies[0].Generation
	policy := mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: "bookinfo", Name: "canary"}

	// The user edits the weights and names a subset that does not exist.
	tp := &in.TrafficPolicies[0]
	tp.Generation = gen + 1
	last := len(tp.Spec.HTTP) - 1
	tp.Spec.HTTP[last].Backends = []meshv1.WeightedBackend{{Subset: "v1", Weight: 50}, {Subset: "v9", Weight: 50}}
	in.LastGood = good.Applied
	refused := mesh.Build(in)
	if got := weights(refused.Services["bookinfo/reviews"]); !equal(got, want) || policyGeneration(refused.Services["bookinfo/reviews"]) != gen {
		t.Fatalf("refused: weights %v generation %d, want the last good %v of generation %d", got, policyGeneration(refused.Services["bookinfo/reviews"]), want, gen)
	}
	v := refused.Verdicts[policy]
	if v.Generation != gen+1 || v.InForce() || v.ResolvedRefs.Reason != meshv1.ReasonSubsetNotFound ||
		v.ResolvedRefs.Field != "spec.http[1].backends[1].subset" || !v.Accepted.OK {
		t.Fatalf("refused: verdict %+v", v)
	}
	// Corrected: in force at once.
	tp.Generation = gen + 2
	tp.Spec.HTTP[last].Backends[1].Subset = "v2"
	in.LastGood = refused.Applied
	accepted := mesh.Build(in)
	if got := weights(accepted.Services["bookinfo/reviews"]); !equal(got, append(want[:len(want)-2:len(want)-2], 50, 50)) {
		t.Fatalf("accepted: weights %v", got)
	}
	if v := accepted.Verdicts[policy]; !v.InForce() || v.Generation != gen+2 {
		t.Fatalf("accepted: verdict %+v", v)
	}

	// A MeshService edit that is refused (a port its Service lacks) keeps
	// the service served as it was.
	ms := &in.MeshServices[0]
	ms.Generation++
	ms.Spec.Ports = append(ms.Spec.Ports, meshv1.MeshServicePort{Port: 9999, Protocol: meshv1.ProtocolHTTP})
	in.LastGood = accepted.Applied
	m := mesh.Build(in)
	if s := m.Services["bookinfo/reviews"]; s == nil || len(s.Ports) != 1 || s.Generation != ms.Generation-1 {
		t.Fatalf("a refused MeshService edit changed the service: %+v", s)
	}
	if v := m.Verdicts[mesh.Ref{Kind: mesh.KindMeshService, Namespace: "bookinfo", Name: "reviews"}]; v.ResolvedRefs.Reason != meshv1.ReasonPortNotFound || v.ResolvedRefs.Field != "spec.ports[1].port" {
		t.Fatalf("MeshService verdict %+v", v)
	}
	// A new policy of the same name, refused, does not inherit the old
	// one's routes.
	tp.UID = types.UID("tp-2")
	tp.Spec.HTTP[last].Backends[1].Subset = "v9"
	in.LastGood = m.Applied
	if m := mesh.Build(in); len(weights(m.Services["bookinfo/reviews"])) != 0 {
		t.Fatal("a recreated policy inherited its predecessor's last good generation")
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
