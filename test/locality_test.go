package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"google.golang.org/grpc"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestLocalityThroughTheAPIServer: nodes labelled with zones, a client pod
// on one of them and a backend in each zone, all objects in the real API
// server. Without a locality preference calls go to both zones; with
// PreferZone every call stays in the client's zone; when the zone's
// backend goes (its endpoint not ready, then its process gone while still
// listed) calls move to the other zone, and they come back when it
// returns. The policy names what grpc-go does not honour of it.
func TestLocalityThroughTheAPIServer(t *testing.T) {
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.21", "192.0.2.22") {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	env, ads := startController(ctx, t)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "shop"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	for _, z := range []string{"a", "b"} {
		must(c.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + z,
			Labels: map[string]string{corev1.LabelTopologyRegion: "eu-1", corev1.LabelTopologyZone: "eu-1" + z}}}))
	}
	// The client's pod runs on node-a; its proxy's node id names it.
	must(c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-1"},
		Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}},
	}}))
	// One backend per zone, published as the endpoints controller would:
	// its EndpointSlice names the node and the zone.
	backends := map[string]*xdstest.FaultyBackend{}
	slices := map[string]*discoveryv1.EndpointSlice{}
	for z, ip := range map[string]string{"a": "192.0.2.21", "b": "192.0.2.22"} {
		name := "reviews-" + z
		backends[z] = xdstest.StartFaultyBackend(t, ip+":0", name, 0, 0)
		must(c.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "reviews"}},
			Spec: corev1.PodSpec{NodeName: "node-" + z, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
		slices[z] = &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(backends[z].Port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				NodeName: ptr.To("node-" + z), Zone: ptr.To("eu-1" + z),
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}}},
		}
		must(c.Create(ctx, slices[z]))
	}
	setReady := func(z string, ready bool) {
		t.Helper()
		sl := slices[z]
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(sl), sl); err != nil {
				return err
			}
			sl.Endpoints[0].Conditions.Ready = ptr.To(ready)
			return c.Update(ctx, sl)
		}))
	}

	cl := xdstest.NewClient(t, ads, "client-1."+ns, "reviews."+ns+".svc.cluster.local:9080")
	if _, err := cl.Call(ctx, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("the client never reached the service: %v", err)
	}
	// share makes n calls and counts them by backend (failures as "").
	share := func(n int) map[string]int {
		counts := map[string]int{}
		for range n {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, _ := cl.Call(callCtx)
			cancel()
			counts[got]++
		}
		return counts
	}
	// allTo waits until every call of a sample goes to one backend, and
	// then checks a larger one.
	allTo := func(backend, why string) {
		t.Helper()
		begin := time.Now()
		if err := testenv.Eventually(ctx, time.Minute, func(context.Context) error {
			if got := share(50); got[backend] != 50 {
				return fmt.Errorf("%s: calls went %v", why, got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got := share(500)
		t.Logf("%s: after %v, 500 calls went %v", why, time.Since(begin).Round(10*time.Millisecond), got)
		if got[backend] != 500 {
			t.Errorf("%s: 500 calls went %v, want all to %s", why, got, backend)
		}
	}

	got := share(200)
	if got["reviews-a"] < 50 || got["reviews-b"] < 50 {
		t.Fatalf("without a locality preference 200 calls went %v, want both zones", got)
	}

	tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nearby"}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "reviews"},
		Locality:  &meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone},
	}}
	must(c.Create(ctx, tp))
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(tp), tp); err != nil {
			return err
		}
		ready := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady)
		honoured := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionHonoured)
		if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != tp.Generation {
			return fmt.Errorf("Ready %+v", ready)
		}
		// grpc-go prefers the zone but moves only when it has nothing
		// left there: the threshold is named, with the flavour.
		if honoured == nil || honoured.Status != metav1.ConditionFalse ||
			!strings.Contains(honoured.Message, "1 proxyless gRPC proxy (grpc) ignores spec.locality.minHealthyPercent") {
			return fmt.Errorf("Honoured %+v", honoured)
		}
		return nil
	}))
	allTo("reviews-a", "PreferZone, caller in eu-1a")

	// The zone's endpoint turns not ready (as a failing readiness probe
	// makes it): calls go to the other zone, and come back.
	setReady("a", false)
	allTo("reviews-b", "eu-1a's endpoint not ready")
	setReady("a", true)
	allTo("reviews-a", "eu-1a's endpoint ready again")

	// The zone's backend dies while still listed: grpc-go finds it
	// unreachable and moves to the next priority by itself, and back once
	// it serves again.
	backends["a"].Stop()
	allTo("reviews-b", "eu-1a's backend gone")
	backends["a"].Start()
	allTo("reviews-a", "eu-1a's backend back")
}
