package controllers_test

import (
	"context"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
)

// synced is Ready as it stands while no proxy is connected.
var synced = want{Type: meshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: meshv1.ReasonSynced}

// A MeshService whose Service is missing says so, is not Current for
// kstatus, and resolves by itself once the Service appears.
func TestMeshServiceResolvesWhenServiceAppears(t *testing.T) {
	ns := newNamespace(t, nil)
	ms := meshService(ns, "reviews", 9080)
	create(t, ms)

	waitFor(t, ms,
		want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""},
		want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonServiceNotFound, `Service "reviews" does not exist`},
		want{meshv1.ConditionStalled, metav1.ConditionTrue, meshv1.ReasonServiceNotFound, "spec.serviceName"},
		want{meshv1.ConditionReady, metav1.ConditionFalse, meshv1.ReasonServiceNotFound, "Not sent to proxies"},
	)
	if ms.Status.ObservedGeneration != ms.Generation {
		t.Errorf("observedGeneration %d, generation %d", ms.Status.ObservedGeneration, ms.Generation)
	}
	if got := kstatusOf(t, ms); got == kstatusCurrent {
		t.Errorf("kstatus of an unresolved MeshService is %s", got)
	}
	gen := ms.Generation

	create(t, service(ns, "reviews", 9080))
	waitFor(t, ms,
		want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""},
		synced,
	)
	noCondition(t, ms, meshv1.ConditionStalled)
	if ms.Generation != gen {
		t.Errorf("the MeshService was edited: generation %d -> %d", gen, ms.Generation)
	}
	if got := kstatusOf(t, ms); got != kstatusCurrent {
		t.Errorf("kstatus of a resolved MeshService is %s, want Current", got)
	}
}

const kstatusCurrent = kstatus.CurrentStatus

func TestMeshServicePortNotFound(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "ratings", 80, 443))
	ms := meshService(ns, "ratings", 80, 8080)
	create(t, ms)
	waitFor(t, ms, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonPortNotFound,
		`spec.ports[1].port: Service "ratings" has no port 8080 (its ports: 80, 443)`})
	if got := kstatusOf(t, ms); got != kstatus.FailedStatus {
		t.Errorf("kstatus is %s, want Failed", got)
	}

	// Fixing the spec resolves it.
	update(t, ms, func(ms *meshv1.MeshService) { ms.Spec.Ports[1].Port = 443 })
	waitFor(t, ms, want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""})
}

// Endpoint counts follow the EndpointSlices; an endpoint in two slices (one
// per address family) counts once.
func TestMeshServiceCountsEndpoints(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "web", 80))
	ms := meshService(ns, "web", 80)
	create(t, ms)

	ep := func(ip, pod string, ready bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)},
			TargetRef:  &corev1ObjectReference{Kind: "Pod", Namespace: ns, Name: pod, UID: typesUID(pod)},
		}
	}
	v4 := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-v4", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{ep("10.1.0.1", "web-a", true), ep("10.1.0.2", "web-b", true), ep("10.1.0.3", "web-c", false)},
	}
	v6 := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-v6", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv6,
		Endpoints:   []discoveryv1.Endpoint{ep("fd00::1", "web-a", true)},
	}
	create(t, v4)
	create(t, v6)
	waitEndpoints(t, ms, 2, 3)

	// A pod turning ready moves the count without any edit to the MeshService.
	update(t, v4, func(s *discoveryv1.EndpointSlice) { s.Endpoints[2].Conditions.Ready = ptr.To(true) })
	waitEndpoints(t, ms, 3, 3)
	if err := env.Client.Delete(context.Background(), v4); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, ms, 1, 1)
}

func waitEndpoints(t *testing.T, ms *meshv1.MeshService, ready, total int32) {
	t.Helper()
	err := eventually(func(ctx context.Context) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(ms), ms); err != nil {
			return err
		}
		if got := ms.Status.Endpoints; got.Ready != ready || got.Total != total {
			return errorf("endpoints %+v, want ready %d total %d", got, ready, total)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Two MeshServices claiming one Service: the older wins, and the newer
// recovers by itself when the older goes.
func TestMeshServiceConflict(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "cart", 80))
	first := meshService(ns, "cart", 80)
	create(t, first)
	waitFor(t, first, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
	// Creation timestamps have one-second resolution; make the order certain.
	time.Sleep(1100 * time.Millisecond)
	second := meshService(ns, "cart-again", 80)
	second.Spec.ServiceName = "cart"
	create(t, second)
	waitFor(t, second, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonConflicted, `MeshService "cart" already puts Service "cart"`})
	waitFor(t, first, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})

	if err := env.Client.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, second, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
}

// A regular expression that the schema cannot check is refused in status,
// with the field's path.
func TestMeshServiceInvalidRegex(t *testing.T) {
	ns := newNamespace(t, nil)
	ms := meshService(ns, "api", 80)
	ms.Spec.Allow = []meshv1.AllowRule{{
		From:  []meshv1.Source{{Namespace: "*"}},
		Paths: []meshv1.PathMatch{{Type: meshv1.MatchRegularExpression, Value: "/v1/(users"}},
	}}
	create(t, ms)
	waitFor(t, ms, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonInvalid, "spec.allow[0].paths[0].value: invalid regular expression"})
}

// Status is written once per change: once settled, the object's
// resourceVersion stays put (no hot loop), and each condition belongs to
// its one writer.
func TestStatusSettlesAndHasOneWriterPerCondition(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "quiet", 80))
	ms := meshService(ns, "quiet", 80)
	create(t, ms)
	waitFor(t, ms, want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""}, synced)
	rv := ms.ResourceVersion
	time.Sleep(2 * time.Second)
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(ms), ms); err != nil {
		t.Fatal(err)
	}
	if ms.ResourceVersion != rv {
		t.Errorf("resourceVersion moved from %s to %s with nothing changing: status is being rewritten", rv, ms.ResourceVersion)
	}

	owners := map[string]string{}
	for _, mf := range ms.ManagedFields {
		if mf.Subresource != "status" || mf.FieldsV1 == nil {
			continue
		}
		for _, c := range []string{meshv1.ConditionAccepted, meshv1.ConditionResolvedRefs, meshv1.ConditionReady} {
			if containsKey(mf.FieldsV1.GetRawBytes(), `k:{\"type\":\"`+c+`\"}`) {
				if prev, ok := owners[c]; ok {
					t.Errorf("condition %s has two writers: %s and %s", c, prev, mf.Manager)
				}
				owners[c] = mf.Manager
			}
		}
	}
	wantOwners := map[string]string{
		meshv1.ConditionAccepted:     controllers.FieldOwnerMeshService,
		meshv1.ConditionResolvedRefs: controllers.FieldOwnerMeshService,
		meshv1.ConditionReady:        controllers.FieldOwnerReadiness,
	}
	for c, w := range wantOwners {
		if owners[c] != w {
			t.Errorf("condition %s is owned by %q, want %q", c, owners[c], w)
		}
	}
}

// RulesEnforced, through the API server: a MeshService that lets everyone
// in has nothing to enforce; once it has allow rules, its endpoints that
// are not STRICT are named, because the rules refuse every caller there.
// Ready and Stalled do not follow it.
func TestMeshServiceRulesEnforced(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "web", 80))
	ms := meshService(ns, "web", 80)
	create(t, ms)
	create(t, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("p80"), Port: ptr.To[int32](8080)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-a", UID: typesUID("web-a")}}},
	})
	waitFor(t, ms, want{meshv1.ConditionRulesEnforced, metav1.ConditionTrue, meshv1.ReasonNoRules, "lets every caller in"}, synced)

	update(t, ms, func(ms *meshv1.MeshService) {
		ms.Spec.Allow = []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: ns, ServiceAccount: "frontend"}}}}
	})
	waitFor(t, ms, want{meshv1.ConditionRulesEnforced, metav1.ConditionFalse, meshv1.ReasonNotStrict,
		"1 of 1 endpoints are not: 10.1.0.1 (pod " + ns + "/web-a) port 8080 is PERMISSIVE by no PeerAuthentication"}, synced)
	noCondition(t, ms, meshv1.ConditionStalled)
}
