package mesh

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

func TestOldestFirst(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(name string, at time.Time) *meshv1.MeshService {
		return &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(at)}}
	}
	got := OldestFirst([]*meshv1.MeshService{ms("c", t0.Add(time.Second)), ms("b", t0), ms("a", t0.Add(time.Second)), ms("z", t0)})
	var names []string
	for _, o := range got {
		names = append(names, o.Name)
	}
	if want := "b z a c"; join(names) != want {
		t.Errorf("order %q, want %q", join(names), want)
	}
}

func join(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

func TestCountEndpoints(t *testing.T) {
	ep := func(addr string, uid string, ready *bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
		if uid != "" {
			e.TargetRef = &corev1.ObjectReference{UID: types.UID(uid)}
		}
		return e
	}
	slices := []discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep("10.0.0.1", "a", ptr.To(true)), ep("10.0.0.2", "b", nil), ep("10.0.0.3", "c", ptr.To(false))}},
		{Endpoints: []discoveryv1.Endpoint{ep("fd00::1", "a", ptr.To(true)), ep("10.0.0.9", "", ptr.To(true)), ep("10.0.0.9", "", ptr.To(true))}},
		{Endpoints: []discoveryv1.Endpoint{{}}},
	}
	got := countEndpoints(ptrs(slices))
	// a (twice, one pod), b (no condition: ready), c (not ready), 10.0.0.9
	// (no pod, counted once by address); the empty endpoint is skipped.
	if got.Ready != 3 || got.Total != 4 {
		t.Errorf("got %+v, want ready 3 total 4", got)
	}
}

// knownReasons are the reasons each verdict check may give.
var knownReasons = map[string]bool{
	meshv1.ReasonAccepted: true, meshv1.ReasonInvalid: true, meshv1.ReasonConflicted: true, meshv1.ReasonTargetNotFound: true,
	meshv1.ReasonResolvedRefs: true, meshv1.ReasonServiceNotFound: true, meshv1.ReasonPortNotFound: true,
	meshv1.ReasonSubsetNotFound: true, meshv1.ReasonProtocolMismatch: true, meshv1.ReasonMirrorNotFound: true,
	meshv1.ReasonRefNotInForce: true,
}

// A TrafficPolicy whose target or mirror MeshService exists but is not in
// force does not resolve, and mirrors nowhere; once both are in force it
// resolves and its route mirrors to the mirror's host.
func TestTrafficPolicyNeedsItsReferencesInForce(t *testing.T) {
	ms := func(name string) meshv1.MeshService {
		return meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name), Generation: 1},
			Spec: meshv1.MeshServiceSpec{ServiceName: name, Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}}}
	}
	svc := func(name string) corev1.Service {
		return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	}
	tp := meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "p", Generation: 1}, Spec: meshv1.TrafficPolicySpec{
		TargetRef: meshv1.TargetRef{Name: "web"},
		HTTP:      []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Weight: 100}}, Mirror: &meshv1.Mirror{Name: "shadow"}}},
	}}
	ref := Ref{KindTrafficPolicy, "ns", "p"}
	for _, tc := range []struct {
		name     string
		services []corev1.Service
		field    string
	}{
		{"target without its Service", []corev1.Service{svc("shadow")}, "spec.targetRef.name"},
		{"mirror without its Service", []corev1.Service{svc("web")}, "spec.http[0].mirror.name"},
	} {
		m := Build(Input{Services: tc.services, MeshServices: []meshv1.MeshService{ms("web"), ms("shadow")}, TrafficPolicies: []meshv1.TrafficPolicy{tp}})
		c := m.Verdicts[ref].ResolvedRefs
		if c.OK || c.Reason != meshv1.ReasonRefNotInForce || c.Field != tc.field {
			t.Errorf("%s: ResolvedRefs %+v, want RefNotInForce on %s", tc.name, c, tc.field)
		}
		if s := m.Services["ns/web"]; s != nil && len(s.Policies) > 0 {
			t.Errorf("%s: the policy is in force: %+v", tc.name, s.Policies)
		}
	}
	m := Build(Input{Services: []corev1.Service{svc("web"), svc("shadow")}, MeshServices: []meshv1.MeshService{ms("web"), ms("shadow")},
		TrafficPolicies: []meshv1.TrafficPolicy{tp}})
	if c := m.Verdicts[ref].ResolvedRefs; !c.OK {
		t.Fatalf("with both in force: %+v", c)
	}
	if got := m.Services["ns/web"].Policies[0].MirrorHosts; len(got) != 1 || got[0] != "shadow.ns.svc.cluster.local" {
		t.Errorf("mirror hosts %v", got)
	}
}

// FuzzBuild feeds arbitrary objects of every kind to Build: it must never
// panic; every object gets a verdict for its generation; every check
// carries a known reason and a message, and a failing one the field it is
// about; only what the verdicts accept is in the model; and a second build
// from the first's Applied gives the same model (nothing depends on map
// order or on what the last build kept).
func FuzzBuild(f *testing.F) {
	f.Add([]byte(`{"targetRef":{"name":"r","port":80},"http":[{"backends":[{"subset":"v3","weight":100}],"mirror":{"name":"m","subset":"x"}}]}`),
		[]byte(`{"serviceName":"r","ports":[{"port":80,"protocol":"http"}],"subsets":[{"name":"v1","labels":{"a":"b"}}]}`),
		[]byte(`{"selector":{"matchLabels":{"a":"b"}},"mode":"STRICT"}`), true, false)
	f.Add([]byte(`{"targetRef":{"name":"r"},"retries":{"attempts":2},"http":[{"matches":[{"path":{"type":"RegularExpression","value":"("}}],"backends":[{"weight":100}]}]}`),
		[]byte(`{"serviceName":"r","ports":[{"port":5432,"protocol":"tcp"}]}`), []byte(`{"selector":{"matchExpressions":[{"key":"a","operator":"Bad"}]}}`), true, true)
	f.Add([]byte(`{}`), []byte(`{}`), []byte(`{}`), false, false)
	f.Fuzz(func(t *testing.T, policy, target, peerAuth []byte, serviceExists, twice bool) {
		t0 := metav1.NewTime(time.Unix(1_700_000_000, 0))
		tp := meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Generation: 2, UID: "tp", CreationTimestamp: t0}}
		ms := meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "ns", Generation: 3, UID: "ms", CreationTimestamp: t0}}
		pa := meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Name: "pa", Namespace: "ns", Generation: 4, UID: "pa", CreationTimestamp: t0}}
		if json.Unmarshal(policy, &tp.Spec) != nil || json.Unmarshal(target, &ms.Spec) != nil || json.Unmarshal(peerAuth, &pa.Spec) != nil {
			return
		}
		in := Input{MeshServices: []meshv1.MeshService{ms}, TrafficPolicies: []meshv1.TrafficPolicy{tp}, PeerAuthentications: []meshv1.PeerAuthentication{pa},
			Pods: []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "r-1", Labels: map[string]string{"a": "b"}}}}}
		if serviceExists {
			svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: ms.Spec.ServiceName}}
			for _, p := range ms.Spec.Ports {
				svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Port: p.Port})
			}
			in.Services = append(in.Services, svc)
			in.EndpointSlices = append(in.EndpointSlices, discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Labels: map[string]string{discoveryv1.LabelServiceName: ms.Spec.ServiceName}},
				Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "r-1"}}},
			})
		}
		if twice {
			// A younger rival of each kind, same spec: refused as Conflicted
			// (or, for a PeerAuthentication with a selector, when they share
			// a pod).
			later := metav1.NewTime(t0.Add(time.Second))
			tp2, ms2, pa2 := *tp.DeepCopy(), *ms.DeepCopy(), *pa.DeepCopy()
			tp2.Name, tp2.UID, tp2.CreationTimestamp = "p2", "tp2", later
			ms2.Name, ms2.UID, ms2.CreationTimestamp = "r2", "ms2", later
			pa2.Name, pa2.UID, pa2.CreationTimestamp = "pa2", "pa2", later
			in.TrafficPolicies = append(in.TrafficPolicies, tp2)
			in.MeshServices = append(in.MeshServices, ms2)
			in.PeerAuthentications = append(in.PeerAuthentications, pa2)
		}
		m := Build(in)
		judged := 0
		for ref, v := range m.Verdicts {
			judged++
			for _, c := range []Check{v.Accepted, v.ResolvedRefs} {
				if !knownReasons[c.Reason] || c.Message == "" {
					t.Errorf("%s: check without a known reason or a message: %+v", ref, c)
				}
				if !c.OK && (!strings.HasPrefix(c.Field, "spec.") || c.Field == "") {
					t.Errorf("%s: failing check names no field: %+v", ref, c)
				}
			}
			if ref.Kind == KindMeshService && ref.Name == "r2" && v.Accepted.OK {
				t.Errorf("the younger of two MeshServices on one Service was accepted: %+v", v)
			}
			if ref.Kind == KindTrafficPolicy && ref.Name == "p2" && v.Accepted.OK {
				t.Errorf("the younger of two TrafficPolicies on one target was accepted: %+v", v)
			}
		}
		if want := len(in.MeshServices) + len(in.TrafficPolicies) + len(in.PeerAuthentications); judged != want {
			t.Errorf("%d verdicts for %d objects", judged, want)
		}
		for key, s := range m.Services {
			v := m.Verdicts[Ref{KindMeshService, s.Namespace, s.Name}]
			if !v.InForce() {
				t.Errorf("MeshService %s is in the model though its verdict refuses it: %+v", key, v)
			}
			for i, p := range s.Policies {
				if !m.Verdicts[Ref{KindTrafficPolicy, s.Namespace, p.Name}].InForce() {
					t.Errorf("TrafficPolicy %s is in the model though its verdict refuses it", p.Name)
				}
				for _, q := range s.Policies[i+1:] {
					if p.Port == 0 || q.Port == 0 || p.Port == q.Port {
						t.Errorf("TrafficPolicies %s and %s both shape a port of %s", p.Name, q.Name, key)
					}
				}
			}
		}
		in.LastGood = m.Applied
		again := Build(in)
		if len(again.Services) != len(m.Services) {
			t.Fatalf("a rebuild from the same objects has %d services, the first %d", len(again.Services), len(m.Services))
		}
		for key, s := range m.Services {
			if !s.Equal(again.Services[key]) {
				t.Errorf("a rebuild from the same objects changed service %s", key)
			}
		}
	})
}

// Conflicts follow one rule, Older, in every kind; a refused
// PeerAuthentication sets no pod's mode.
func TestConflictsOlderWins(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(t0.Add(d)) }
	in := Input{
		Services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}},
		Pods:     []corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", Labels: map[string]string{"app": "web"}}}},
		EndpointSlices: []discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-a", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "ns", Name: "web-1"}}},
		}},
	}
	for i, name := range []string{"b", "a"} {
		in.MeshServices = append(in.MeshServices, meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, CreationTimestamp: at(time.Duration(i) * time.Second)},
			Spec: meshv1.MeshServiceSpec{ServiceName: "web", Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}}}})
		in.TrafficPolicies = append(in.TrafficPolicies, meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "tp-" + name, Generation: 1, CreationTimestamp: at(time.Duration(i) * time.Second)},
			Spec: meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "b", Port: ptr.To[int32](80)}}})
		in.PeerAuthentications = append(in.PeerAuthentications, meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pa-" + name, Generation: 1, CreationTimestamp: at(time.Duration(i) * time.Second), UID: types.UID(name)},
			Spec: meshv1.PeerAuthenticationSpec{Mode: []meshv1.MTLSMode{meshv1.MTLSStrict, meshv1.MTLSDisable}[i]}})
	}
	m := Build(in)
	for _, c := range []struct {
		ref  Ref
		want bool
	}{
		{Ref{KindMeshService, "ns", "b"}, true}, {Ref{KindMeshService, "ns", "a"}, false},
		{Ref{KindTrafficPolicy, "ns", "tp-b"}, true}, {Ref{KindTrafficPolicy, "ns", "tp-a"}, false},
		{Ref{KindPeerAuthentication, "ns", "pa-b"}, true}, {Ref{KindPeerAuthentication, "ns", "pa-a"}, false},
	} {
		v := m.Verdicts[c.ref]
		if v.Accepted.OK != c.want || (!c.want && v.Accepted.Reason != meshv1.ReasonConflicted) {
			t.Errorf("%s: accepted %v (%s: %s), want %v", c.ref, v.Accepted.OK, v.Accepted.Reason, v.Accepted.Message, c.want)
		}
	}
	s := m.Services["ns/b"]
	if s == nil || len(s.Endpoints) != 1 || s.Endpoints[0].MTLS != meshv1.MTLSStrict {
		t.Fatalf("the older PeerAuthentication does not set the mode: %+v", s)
	}
	if got := m.Shaping; len(got) != 1 || got[Ref{KindPeerAuthentication, "ns", "pa-b"}] != 1 {
		t.Errorf("shaping %v, want only pa-b at generation 1", got)
	}
	if v := m.Verdicts[Ref{KindPeerAuthentication, "ns", "pa-b"}]; v.Scope != meshv1.ScopeNamespace || v.Workloads != 1 {
		t.Errorf("pa-b: scope %s workloads %d, want Namespace 1", v.Scope, v.Workloads)
	}
}

// A MeshService stored before admission refused it, whose rule narrows
// every namespace ("*") by a ServiceAccount name, is refused naming the
// field, so that it never widens to that name in every namespace.
func TestEveryNamespaceByServiceAccountRefused(t *testing.T) {
	ms := meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", UID: "web", Generation: 1},
		Spec: meshv1.MeshServiceSpec{ServiceName: "web", Ports: []meshv1.MeshServicePort{{Port: 80, Protocol: meshv1.ProtocolHTTP}},
			Allow: []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: "ns"}, {Namespace: "*", ServiceAccount: "checkout"}}}}}}
	m := Build(Input{MeshServices: []meshv1.MeshService{ms},
		Services: []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}}})
	v := m.Verdicts[Ref{KindMeshService, "ns", "web"}]
	if v.Accepted.OK || v.Accepted.Reason != meshv1.ReasonInvalid || v.Accepted.Field != "spec.allow[0].from[1].serviceAccount" {
		t.Errorf("verdict %+v, want Invalid on spec.allow[0].from[1].serviceAccount", v.Accepted)
	}
	if m.Services["ns/web"] != nil {
		t.Error("the refused MeshService is in force")
	}
}
