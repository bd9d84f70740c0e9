package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// The mesh model follows the objects in the API server: a MeshService
// appears once its reconciler resolved it, with its endpoints, and a burst
// of endpoint changes costs a few rebuilds, not one each.
func TestModelFollowsTheWorld(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "catalog", 80))
	ms := meshService(ns, "catalog", 80)
	create(t, ms)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "catalog-1", Labels: map[string]string{discoveryv1.LabelServiceName: "catalog"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p80"), Port: ptr.To[int32](8080)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.2.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	create(t, slice)

	waitModel := func(what string, ok func(*mesh.Service) bool) {
		t.Helper()
		if err := eventually(func(context.Context) error {
			m, _ := models.get()
			if m == nil {
				return fmt.Errorf("no model yet")
			}
			if s := m.Services[mesh.Key(ns, "catalog")]; s == nil || !ok(s) {
				return fmt.Errorf("the model does not show %s yet: %+v", what, s)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitModel("the service with one endpoint", func(s *mesh.Service) bool {
		return len(s.Endpoints) == 1 && s.Endpoints[0].Address == "10.2.0.1" && s.Endpoints[0].Ports["p80"] == 8080
	})

	// Let the reconcilers' own status writes settle, then change the slice
	// 20 times in a row.
	time.Sleep(500 * time.Millisecond)
	_, before := models.get()
	for i := range 20 {
		update(t, slice, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.2.1.%d", i)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		})
	}
	waitModel("21 endpoints", func(s *mesh.Service) bool { return len(s.Endpoints) == 21 })
	time.Sleep(300 * time.Millisecond)
	_, after := models.get()
	t.Logf("20 endpoint changes cost %d model rebuilds", after-before)
	if after-before >= 10 {
		t.Errorf("20 endpoint changes cost %d rebuilds; the debounce is not collapsing bursts", after-before)
	}

	// A policy that cannot be resolved never reaches the model.
	tp := split(ns, "bad", "catalog", meshv1.WeightedBackend{Subset: "v9", Weight: 100})
	create(t, tp)
	waitFor(t, tp, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonSubsetNotFound, ""})
	time.Sleep(300 * time.Millisecond)
	if m, _ := models.get(); len(m.Services[mesh.Key(ns, "catalog")].Routes) != 0 {
		t.Error("an unresolved TrafficPolicy reached the mesh model")
	}
}
