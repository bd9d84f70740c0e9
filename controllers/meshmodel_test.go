package controllers_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
)

// The mesh model follows the objects in the API server: a MeshService
// appears once its verdict resolves it, with its endpoints, and a burst
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

	// Count what the model watcher is told: a watch of the test's own on
	// every kind the watcher follows, cluster-wide, notes when each event
	// arrives. The burst's writes cost more rebuilds on a loaded machine
	// (a Get and Update can take longer than the quiet period); the bound
	// below follows the events as they came (the MeshService's status
	// writes among them, though those rebuild nothing: the bound is loose
	// by them).
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	var (
		eventsMu sync.Mutex
		events   []time.Time
		ended    atomic.Int32
	)
	for _, l := range []client.ObjectList{&corev1.ServiceList{}, &discoveryv1.EndpointSliceList{}, &corev1.PodList{},
		&meshv1.MeshServiceList{}, &meshv1.TrafficPolicyList{}, &meshv1.PeerAuthenticationList{}} {
		// From the listed version on, so that the watch's first events are
		// not one for each object there is.
		if err := wc.List(context.Background(), l); err != nil {
			t.Fatalf("listing %T: %v", l, err)
		}
		w, err := wc.Watch(context.Background(), l, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: l.GetResourceVersion()}})
		if err != nil {
			t.Fatalf("watching %T: %v", l, err)
		}
		defer w.Stop()
		go func() {
			defer ended.Add(1)
			for range w.ResultChan() {
				at := time.Now()
				eventsMu.Lock()
				events = append(events, at)
				eventsMu.Unlock()
			}
		}()
	}

	// settle waits until the rebuild count has not changed for 1.5 s,
	// longer than the debounce's max delay, so that no rebuild for an
	// earlier change is still to come, and returns the count.
	const settleFor = 1500 * time.Millisecond
	settle := func(what string) int {
		t.Helper()
		_, n := models.get()
		changed, deadline := time.Now(), time.Now().Add(30*time.Second)
		for time.Since(changed) < settleFor {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the mesh model was still being rebuilt after 30 s (%d rebuilds so far)", what, n)
			}
			time.Sleep(50 * time.Millisecond)
			if _, m := models.get(); m != n {
				n, changed = m, time.Now()
			}
		}
		return n
	}

	// Let the reconcilers' own status writes settle, then change the slice
	// 20 times in a row.
	before := settle("before the burst")
	// An event that came just before the count settled may still be
	// waiting for its rebuild; such events count as part of the burst.
	from := time.Now().Add(-settleFor)
	for i := range 20 {
		update(t, slice, func(s *discoveryv1.EndpointSlice) {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.2.1.%d", i)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		})
	}
	waitModel("21 endpoints", func(s *mesh.Service) bool { return len(s.Endpoints) == 21 })
	after := settle("after the burst")
	if ended.Load() != 0 {
		t.Fatal("a watch of the test's own ended early; the events the model watcher saw are not all counted")
	}
	eventsMu.Lock()
	var at []time.Time
	for _, e := range events {
		if !e.Before(from) {
			at = append(at, e)
		}
	}
	eventsMu.Unlock()
	if len(at) == 0 {
		t.Fatal("the test's watches saw none of the 20 writes")
	}
	slices.SortFunc(at, time.Time.Compare)

	// What the debounce promises for these events (controllers.Setup's
	// defaults, which this suite keeps: 100 ms quiet, 1 s max delay): after
	// a rebuild it waits for the next event, so each rebuild but the last
	// needs a gap between events longer than the quiet period, or the max
	// delay run out since a burst began. A gap counts here from half the
	// quiet period on, for the difference between when this test's watch
	// and the manager's informer get an event. When the writes come faster
	// than the quiet period (an idle machine) the bound stays the original
	// claim, fewer than 10 rebuilds for 20 changes.
	const modelQuiet, modelMaxDelay = 100 * time.Millisecond, time.Second
	gaps := 0
	for i := 1; i < len(at); i++ {
		if at[i].Sub(at[i-1]) > modelQuiet/2 {
			gaps++
		}
	}
	span := at[len(at)-1].Sub(at[0])
	allowed := gaps + int(math.Ceil(float64(span)/float64(modelMaxDelay))) + 1
	limit := max(9, allowed)
	t.Logf("20 endpoint changes cost %d model rebuilds; the watcher was told of %d events over %v with %d gaps over %v, for which the debounce allows %d (limit %d)",
		after-before, len(at), span.Round(time.Millisecond), gaps, modelQuiet/2, allowed, limit)
	if after-before > limit {
		t.Errorf("20 endpoint changes cost %d rebuilds, more than the %d the debounce allows for these events; it is not collapsing bursts", after-before, limit)
	}

	// A policy that cannot be resolved never reaches the model.
	tp := split(ns, "bad", "catalog", meshv1.WeightedBackend{Subset: "v9", Weight: 100})
	create(t, tp)
	waitFor(t, tp, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonSubsetNotFound, ""})
	time.Sleep(300 * time.Millisecond)
	if m, _ := models.get(); len(m.Services[mesh.Key(ns, "catalog")].Policies) != 0 {
		t.Error("an unresolved TrafficPolicy reached the mesh model")
	}
}
