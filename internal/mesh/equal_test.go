package mesh

import (
	"testing"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func sample() *Service {
	return &Service{
		Namespace: "bookinfo", Name: "reviews", Host: "reviews.bookinfo.svc.cluster.local", ServiceName: "reviews",
		ClusterIPs: []string{"10.96.0.10"}, Ports: []Port{{Number: 9080, Name: "grpc", Protocol: meshv1.ProtocolGRPC}},
		Subsets:   []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}},
		Endpoints: []Endpoint{{Address: "10.1.0.1", Pod: "bookinfo/reviews-v1", Ports: map[string]int32{"grpc": 9080}, Labels: map[string]string{"version": "v1"}, Ready: true}},
		Policies: []Policy{{Name: "p", Generation: 1, Spec: meshv1.TrafficPolicySpec{
			HTTP: []meshv1.HTTPRoute{{Name: "r", Backends: []meshv1.WeightedBackend{{Subset: "v1", Weight: 100}}}},
		}}},
		Generation: 1,
	}
}

// Equal sees every field: a copy is equal, and a change to any one field
// makes it differ.
func TestServiceEqual(t *testing.T) {
	if !sample().Equal(sample()) {
		t.Fatal("two equal services differ")
	}
	changes := map[string]func(*Service){
		"host":              func(s *Service) { s.Host = "x" },
		"cluster IP":        func(s *Service) { s.ClusterIPs[0] = "10.96.0.11" },
		"port protocol":     func(s *Service) { s.Ports[0].Protocol = meshv1.ProtocolTCP },
		"subset labels":     func(s *Service) { s.Subsets[0].Labels["version"] = "v2" },
		"endpoint ready":    func(s *Service) { s.Endpoints[0].Ready = false },
		"endpoint port":     func(s *Service) { s.Endpoints[0].Ports["grpc"] = 9081 },
		"endpoint label":    func(s *Service) { s.Endpoints[0].Labels["version"] = "v2" },
		"endpoint zone":     func(s *Service) { s.Endpoints[0].Zone = "a" },
		"endpoint removed":  func(s *Service) { s.Endpoints = nil },
		"route weight":      func(s *Service) { s.Policies[0].Spec.HTTP[0].Backends[0].Weight = 50 },
		"retries":           func(s *Service) { s.Policies[0].Spec.Retries = &meshv1.RetryPolicy{} },
		"policy port":       func(s *Service) { s.Policies[0].Port = 9080 },
		"policy generation": func(s *Service) { s.Policies[0].Generation = 2 },
		"generation":        func(s *Service) { s.Generation = 2 },
		"policy":            func(s *Service) { s.Policies[0].Name = "q" },
	}
	for name, change := range changes {
		s := sample()
		change(s)
		if s.Equal(sample()) || sample().Equal(s) {
			t.Errorf("a service whose %s changed is equal to the original", name)
		}
	}
}
