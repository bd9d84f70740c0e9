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
	for _, r := range s.Routes {
		for _, b := range r.Backends {
			out = append(out, b.Weight)
		}
	}
	return out
}

// An edit that is refused, or not reconciled yet, leaves the last good
// generation of a TrafficPolicy and of a MeshService in force; one
// accepted takes over; a new object of the same name does not inherit.
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

	// The user edits the weights; the reconciler has not looked yet.
	tp := &in.TrafficPolicies[0]
	tp.Generation = gen + 1
	tp.Spec.HTTP[len(tp.Spec.HTTP)-1].Backends = []meshv1.WeightedBackend{{Subset: "v1", Weight: 50}, {Subset: "v2", Weight: 50}}
	in.LastGood = good.Applied
	pending := mesh.Build(in)
	if got := weights(pending.Services["bookinfo/reviews"]); !equal(got, want) || pending.Services["bookinfo/reviews"].PolicyGeneration != gen {
		t.Fatalf("before the reconciler looked: weights %v generation %d, want the last good %v of generation %d", got, pending.Services["bookinfo/reviews"].PolicyGeneration, want, gen)
	}
	// The reconciler refuses it.
	tp.Status.Conditions = xdstest.InForce(gen + 1)
	tp.Status.Conditions[1].Status = "False"
	in.LastGood = pending.Applied
	refused := mesh.Build(in)
	if got := weights(refused.Services["bookinfo/reviews"]); !equal(got, want) {
		t.Fatalf("refused: weights %v, want the last good %v", got, want)
	}
	// Accepted at last.
	tp.Status.Conditions = xdstest.InForce(gen + 1)
	in.LastGood = refused.Applied
	accepted := mesh.Build(in)
	if got := weights(accepted.Services["bookinfo/reviews"]); !equal(got, append(want[:len(want)-2:len(want)-2], 50, 50)) {
		t.Fatalf("accepted: weights %v", got)
	}

	// A MeshService edit that is refused keeps the service served.
	ms := &in.MeshServices[0]
	ms.Generation++
	in.LastGood = accepted.Applied
	if m := mesh.Build(in); m.Services["bookinfo/reviews"] == nil {
		t.Fatal("a MeshService edit not reconciled yet took the service out of the mesh")
	}
	// A new policy of the same name, not accepted, does not inherit the
	// old one's routes.
	tp.UID = types.UID("tp-2")
	tp.Status.Conditions[0].Status = "False"
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
