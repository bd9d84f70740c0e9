package controllers_test

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// A policy that names an unknown subset says which one, and resolves when
// the MeshService grows that subset, with no edit to the policy.
func TestTrafficPolicyUnknownSubset(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "reviews", 9080))
	ms := meshService(ns, "reviews", 9080)
	create(t, ms)
	tp := split(ns, "canary", "reviews", meshv1.WeightedBackend{Subset: "v1", Weight: 90}, meshv1.WeightedBackend{Subset: "v3", Weight: 10})
	create(t, tp)
	waitFor(t, tp,
		want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""},
		want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonSubsetNotFound,
			`spec.http[0].backends[1].subset: MeshService "reviews" has no subset "v3" (its subsets: v1, v2)`},
		want{meshv1.ConditionStalled, metav1.ConditionTrue, meshv1.ReasonSubsetNotFound, `"v3"`},
		want{meshv1.ConditionReady, metav1.ConditionFalse, meshv1.ReasonSubsetNotFound, ""},
	)
	if got := kstatusOf(t, tp); got != kstatus.FailedStatus {
		t.Errorf("kstatus of a policy with an unknown subset is %s, want Failed", got)
	}
	gen := tp.Generation

	update(t, ms, func(ms *meshv1.MeshService) {
		ms.Spec.Subsets = append(ms.Spec.Subsets, meshv1.Subset{Name: "v3", Labels: map[string]string{"version": "v3"}})
	})
	waitFor(t, tp,
		want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""},
		synced,
	)
	noCondition(t, tp, meshv1.ConditionStalled)
	if tp.Generation != gen {
		t.Errorf("the policy was edited")
	}
	if got := kstatusOf(t, tp); got != kstatus.CurrentStatus {
		t.Errorf("kstatus of a resolved policy is %s, want Current", got)
	}
}

// A policy whose target is missing says TargetNotFound and resolves when
// the MeshService is created (with its Service: in force).
func TestTrafficPolicyTargetAppears(t *testing.T) {
	ns := newNamespace(t, nil)
	tp := split(ns, "split", "details", meshv1.WeightedBackend{Weight: 100})
	create(t, tp)
	waitFor(t, tp,
		want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonTargetNotFound, `MeshService "details" does not exist`},
		want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonTargetNotFound, "spec.targetRef.name"},
	)
	create(t, service(ns, "details", 80))
	create(t, meshService(ns, "details", 80))
	waitFor(t, tp,
		want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""},
		want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""},
	)
}

// Two policies on the same port: the older wins. Policies on different
// ports coexist.
func TestTrafficPolicyConflict(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, meshService(ns, "shop", 80, 81))
	older := split(ns, "older", "shop", meshv1.WeightedBackend{Subset: "v1", Weight: 100})
	create(t, older)
	waitFor(t, older, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
	time.Sleep(1100 * time.Millisecond)

	newer := split(ns, "newer", "shop", meshv1.WeightedBackend{Subset: "v2", Weight: 100})
	newer.Spec.TargetRef.Port = ptr.To[int32](80)
	create(t, newer)
	waitFor(t, newer, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonConflicted,
		`TrafficPolicy "older" is older and already shapes port 80 of MeshService "shop"`})

	// Narrowing the older policy to the other port ends the conflict.
	update(t, older, func(p *meshv1.TrafficPolicy) { p.Spec.TargetRef.Port = ptr.To[int32](81) })
	waitFor(t, newer, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
	waitFor(t, older, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
}

// HTTP features on a tcp port, a port the target lacks, a bad regex and a
// missing mirror are each reported with the field.
func TestTrafficPolicyUnresolvable(t *testing.T) {
	ns := newNamespace(t, nil)
	db := meshService(ns, "db", 5432)
	db.Spec.Ports[0].Protocol = meshv1.ProtocolTCP
	create(t, db)
	create(t, service(ns, "web", 80))
	create(t, meshService(ns, "web", 80))

	tcp := split(ns, "tcp", "db", meshv1.WeightedBackend{Weight: 100})
	create(t, tcp)
	waitFor(t, tcp, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonProtocolMismatch,
		`spec.http: needs an http, http2 or grpc port, but MeshService "db" speaks only tcp`})

	port := split(ns, "port", "web", meshv1.WeightedBackend{Weight: 100})
	port.Spec.TargetRef.Port = ptr.To[int32](8080)
	create(t, port)
	waitFor(t, port, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonPortNotFound,
		`spec.targetRef.port: MeshService "web" has no port 8080 (its ports: 80/http)`})

	regex := split(ns, "regex", "web", meshv1.WeightedBackend{Weight: 100})
	regex.Spec.TargetRef.Port = ptr.To[int32](80)
	regex.Spec.HTTP[0].Matches = []meshv1.HTTPMatch{{Headers: []meshv1.HeaderMatch{{
		Name: "x-user", Type: meshv1.HeaderMatchRegularExpression, Value: ptr.To("a(b"),
	}}}}
	create(t, regex)
	waitFor(t, regex, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonInvalid,
		"spec.http[0].matches[0].headers[0].value: invalid regular expression"})

	// Fixing the regex after the fact moves it to Accepted.
	update(t, regex, func(p *meshv1.TrafficPolicy) {
		p.Spec.HTTP[0].Matches[0].Headers[0].Value = ptr.To("a(b)")
		p.Spec.HTTP[0].Mirror = &meshv1.Mirror{Name: "shadow"}
	})
	waitFor(t, regex,
		want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""},
		want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonMirrorNotFound, `spec.http[0].mirror.name: MeshService "shadow" does not exist`},
	)
	// A mirror MeshService that is not in force (its Service is missing)
	// resolves nothing: nowhere to send copies to.
	create(t, meshService(ns, "shadow", 80))
	waitFor(t, regex, want{meshv1.ConditionResolvedRefs, metav1.ConditionFalse, meshv1.ReasonRefNotInForce,
		`spec.http[0].mirror.name: MeshService "shadow" exists but is not in force`})
	// Its Service appearing puts it in force, and resolves the policy.
	create(t, service(ns, "shadow", 80))
	waitFor(t, regex, want{meshv1.ConditionResolvedRefs, metav1.ConditionTrue, meshv1.ReasonResolvedRefs, ""})
}

// Every field of a policy is translated: one that sets a fault and a
// locality preference is Ready like any other.
func TestTrafficPolicyEveryFieldIsApplied(t *testing.T) {
	ns := newNamespace(t, nil)
	create(t, service(ns, "reviews", 9080))
	create(t, meshService(ns, "reviews", 9080))
	tp := split(ns, "faulty", "reviews", meshv1.WeightedBackend{Subset: "v1", Weight: 100})
	tp.Spec.HTTP[0].Fault = &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](503), Percentage: 10}}
	tp.Spec.Locality = &meshv1.LocalityPolicy{Mode: meshv1.LocalityPreferZone}
	create(t, tp)
	waitFor(t, tp, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""}, synced)
}
