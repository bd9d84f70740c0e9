package translate

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// bookinfo is a mesh with an HTTP service with subsets and a canary
// policy, a gRPC service and a TCP one, each with a cluster IP.
func bookinfo() mesh.Input {
	in := xdstest.ReviewsInput(xdstest.Ready("reviews-v1", "v1", "10.1.0.1", 9080), xdstest.Ready("reviews-v2", "v2", "10.1.0.2", 9080))
	in.Services[0].Spec.ClusterIPs = []string{"10.96.0.10"}
	in.MeshServices[0].Spec.Ports[0].Protocol = meshv1.ProtocolHTTP
	add := func(name string, port int32, proto meshv1.Protocol, ip, podIP string) {
		in.Services = append(in.Services, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name},
			Spec:       corev1.ServiceSpec{ClusterIPs: []string{ip}, Ports: []corev1.ServicePort{{Name: "main", Port: port}}},
		})
		in.MeshServices = append(in.MeshServices, meshv1.MeshService{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name, Generation: 1},
			Spec:       meshv1.MeshServiceSpec{ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: port, Protocol: proto}}},
		})
		in.EndpointSlices = append(in.EndpointSlices, discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "bookinfo", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("main"), Port: ptr.To(port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{podIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "bookinfo", Name: name + "-0"}}},
		})
	}
	add("ratings", 9090, meshv1.ProtocolGRPC, "10.96.0.11", "10.1.0.3")
	add("mongodb", 27017, meshv1.ProtocolTCP, "10.96.0.12", "10.1.0.4")
	return in
}

// Both flavours share the resources they have in common, byte for byte,
// so the cache keeps one copy of each.
func TestFlavoursShareResources(t *testing.T) {
	m := mesh.Build(bookinfo())
	e, err := translateFor(m, Proxy{ID: "e", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := translateFor(m, Proxy{ID: "g", Flavour: wire.FlavourGRPC})
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range g.Routes {
		found := false
		for _, other := range e.Routes {
			if other.Name == rc.Name {
				found = proto.Equal(rc, other)
			}
		}
		if !found {
			t.Errorf("route configuration %s differs between flavours", rc.Name)
		}
	}
}

// A filter chain that names a route configuration that is not there is
// caught.
func TestValidateFollowsFilterChains(t *testing.T) {
	r, err := translateFor(mesh.Build(bookinfo()), Proxy{ID: "e", Flavour: wire.FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	r.Routes = r.Routes[1:]
	if err := r.Validate(); !errors.Is(err, ErrDangling) {
		t.Fatalf("want a dangling reference, got %v", err)
	}
}

// A model in which one endpoint changed translates with every other
// resource the previous model's very object (which the cache recognises
// without comparing), and with the changed ones new.
func TestUnchangedResourcesKeepTheirObjects(t *testing.T) {
	base := xdstest.ScaleInput(20)
	prev, err := BuildShared(mesh.Build(base), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	flip := xdstest.ScaleInput(20)
	flip.EndpointSlices[3].Endpoints[0].Conditions.Ready = new(bool) // svc-3's v1 subset
	next, err := BuildShared(mesh.Build(flip), prev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var fresh []string
	for _, r := range [][]proto.Message{toMsgs(next.Envoy.Listeners), toMsgs(next.Envoy.Routes), toMsgs(next.Envoy.Clusters), toMsgs(next.Envoy.Endpoints)} {
		for _, m := range r {
			if !containsObject(prev, m) {
				fresh = append(fresh, nameOf(m))
			}
		}
	}
	slices.Sort(fresh)
	want := []string{"outbound|8080||svc-3.ns-3.svc.cluster.local", "outbound|8080|v1|svc-3.ns-3.svc.cluster.local"}
	slices.Sort(want)
	if !slices.Equal(fresh, want) {
		t.Fatalf("new objects after one endpoint changed: %v, want %v", fresh, want)
	}
}

func containsObject(sh *Shared, m proto.Message) bool {
	for _, r := range []*Resources{sh.Envoy, sh.GRPC} {
		for _, x := range [][]proto.Message{toMsgs(r.Listeners), toMsgs(r.Routes), toMsgs(r.Clusters), toMsgs(r.Endpoints)} {
			if slices.Contains(x, m) {
				return true
			}
		}
	}
	return false
}

func nameOf(m proto.Message) string {
	switch x := m.(type) {
	case interface{ GetName() string }:
		return x.GetName()
	case interface{ GetClusterName() string }:
		return x.GetClusterName()
	}
	return "?"
}
