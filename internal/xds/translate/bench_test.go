package translate

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// scaleInput is a mesh of n services, each with one gRPC port, two subsets
// and 10 endpoints (5 per subset), and a 90/10 policy on every tenth.
func scaleInput(n int) mesh.Input {
	var in mesh.Input
	for i := range n {
		ns, name := fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("svc-%d", i)
		in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250)},
				Ports: []corev1.ServicePort{{Name: "grpc", Port: 8080}}}})
		in.MeshServices = append(in.MeshServices, meshv1.MeshService{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
			Spec: meshv1.MeshServiceSpec{ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: 8080, Protocol: meshv1.ProtocolGRPC}},
				Subsets: []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}},
			Status: meshv1.MeshServiceStatus{Status: meshv1.Status{Conditions: xdstest.InForce(1)}},
		})
		if i%10 == 0 {
			in.TrafficPolicies = append(in.TrafficPolicies, meshv1.TrafficPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
				Spec: meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: name},
					HTTP: []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 90}, {Subset: "v2", Weight: 10}}}}},
				Status: meshv1.TrafficPolicyStatus{Status: meshv1.Status{Conditions: xdstest.InForce(1)}},
			})
		}
		sl := discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To[int32](8080)}},
		}
		for e := range 10 {
			pod := fmt.Sprintf("%s-%d", name, e)
			version := "v1"
			if e >= 5 {
				version = "v2"
			}
			in.Pods = append(in.Pods, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: map[string]string{"version": version}}})
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 1+i/65000, (i/250)%256, (i%250)*1+e)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
			})
		}
		in.EndpointSlices = append(in.EndpointSlices, sl)
	}
	return in
}

func size(r *Resources) (resources int, bytes int) {
	add := func(m proto.Message) { resources++; bytes += proto.Size(m) }
	for _, x := range r.Listeners {
		add(x)
	}
	for _, x := range r.Routes {
		add(x)
	}
	for _, x := range r.Clusters {
		add(x)
	}
	for _, x := range r.Endpoints {
		add(x)
	}
	return
}

// BenchmarkTranslate translates a whole mesh for one proxy, per flavour and
// size, and reports the time per cluster and the size of the result.
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		m := mesh.Build(scaleInput(n))
		for _, f := range []Flavour{FlavourGRPC, FlavourEnvoy} {
			b.Run(fmt.Sprintf("%s/services=%d", f, n), func(b *testing.B) {
				proxy := Proxy{ID: "p", Flavour: f, Pod: "ns-0/svc-0-0"}
				var r *Resources
				var err error
				for b.Loop() {
					if r, err = Translate(m, proxy); err != nil {
						b.Fatal(err)
					}
				}
				res, bytes := size(r)
				b.ReportMetric(float64(len(r.Clusters)), "clusters")
				b.ReportMetric(float64(res), "resources")
				b.ReportMetric(float64(bytes)/1024, "KB/proxy")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(r.Clusters))/1000, "µs/cluster")
			})
		}
	}
}

// BenchmarkModelBuild builds the model from its inputs, the cost of every
// debounced rebuild.
func BenchmarkModelBuild(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		in := scaleInput(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			for b.Loop() {
				mesh.Build(in)
			}
		})
	}
}
