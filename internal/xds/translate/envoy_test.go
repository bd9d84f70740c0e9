package translate

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/golden"
	"github.com/weftmesh/weft/internal/mesh"
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
			Status:     meshv1.MeshServiceStatus{Status: meshv1.Status{Conditions: xdstest.InForce(1)}},
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

// TestEnvoyGolden pins what the sidecar of pod reviews-v1 receives: the
// outbound listener with a chain per service port (HTTP through RDS, TCP
// through tcp_proxy, everything else passed through), the inbound listener
// with a chain for its own port 9080, the routes, and the clusters.
func TestEnvoyGolden(t *testing.T) {
	r, err := Translate(mesh.Build(bookinfo()), Proxy{ID: "reviews-v1.bookinfo", Namespace: "bookinfo", Flavour: FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "bookinfo-envoy.golden", render(t, r))
}

// Both flavours share the resources they have in common, byte for byte,
// so the cache keeps one copy of each.
func TestFlavoursShareResources(t *testing.T) {
	m := mesh.Build(bookinfo())
	e, err := Translate(m, Proxy{ID: "e", Flavour: FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	g, err := Translate(m, Proxy{ID: "g", Flavour: FlavourGRPC})
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
	r, err := Translate(mesh.Build(bookinfo()), Proxy{ID: "e", Flavour: FlavourEnvoy, Pod: "bookinfo/reviews-v1"})
	if err != nil {
		t.Fatal(err)
	}
	r.Routes = r.Routes[1:]
	if err := r.Validate(); !errors.Is(err, ErrDangling) {
		t.Fatalf("want a dangling reference, got %v", err)
	}
}
