package controllers

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

var knownReasons = map[string]map[string]bool{
	meshv1.ConditionAccepted: {meshv1.ReasonAccepted: true, meshv1.ReasonInvalid: true, meshv1.ReasonConflicted: true, meshv1.ReasonTargetNotFound: true},
	meshv1.ConditionResolvedRefs: {meshv1.ReasonResolvedRefs: true, meshv1.ReasonTargetNotFound: true, meshv1.ReasonPortNotFound: true,
		meshv1.ReasonSubsetNotFound: true, meshv1.ReasonProtocolMismatch: true, meshv1.ReasonMirrorNotFound: true},
}

// FuzzTrafficPolicyConditions feeds arbitrary policies and targets to the
// condition checks: they must never panic, and every condition must carry
// a known reason and a message, with a field path when it fails.
func FuzzTrafficPolicyConditions(f *testing.F) {
	f.Add([]byte(`{"targetRef":{"name":"r","port":80},"http":[{"backends":[{"subset":"v3","weight":100}],"mirror":{"name":"m","subset":"x"}}]}`),
		[]byte(`{"serviceName":"r","ports":[{"port":80,"protocol":"http"}],"subsets":[{"name":"v1","labels":{"a":"b"}}]}`), true, false)
	f.Add([]byte(`{"targetRef":{"name":"r"},"retries":{"attempts":2},"http":[{"matches":[{"path":{"type":"RegularExpression","value":"("}}],"backends":[{"weight":100}]}]}`),
		[]byte(`{"serviceName":"r","ports":[{"port":5432,"protocol":"tcp"}]}`), true, true)
	f.Add([]byte(`{}`), []byte(`{}`), false, false)
	f.Fuzz(func(t *testing.T, policy, target []byte, targetExists, mirrorExists bool) {
		tp := &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Generation: 1}}
		if json.Unmarshal(policy, &tp.Spec) != nil {
			return
		}
		s := &trafficPolicyScope{tp: tp, mirrors: map[string]*meshv1.MeshService{}, rivals: []meshv1.TrafficPolicy{*tp}}
		if targetExists {
			s.target = &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Name: tp.Spec.TargetRef.Name}}
			if json.Unmarshal(target, &s.target.Spec) != nil {
				return
			}
		}
		for _, r := range tp.Spec.HTTP {
			if r.Mirror != nil && mirrorExists {
				s.mirrors[r.Mirror.Name] = s.target
			}
		}
		for _, c := range []metav1.Condition{trafficPolicyAccepted(s), trafficPolicyResolvedRefs(s)} {
			if !knownReasons[c.Type][c.Reason] {
				t.Errorf("%s has unknown reason %q", c.Type, c.Reason)
			}
			if c.Message == "" || c.ObservedGeneration != 1 {
				t.Errorf("%s lacks a message or generation: %+v", c.Type, c)
			}
			if c.Status == metav1.ConditionFalse && !strings.Contains(c.Message, "spec.") {
				t.Errorf("%s=False does not name a field: %q", c.Type, c.Message)
			}
		}
	})
}
