package chart_test

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/testenv"
)

// TestDescribeShowsConditions: kubectl describe, the real binary, shows
// for each kind the conditions weft's controllers wrote, each with Type,
// Status, Reason and Message: Ready True for a resource in force, and for
// a broken one the reason and a message that names the field to fix.
// The controllers run in the test's process (no proxies are connected, so
// a resource in force is Ready at once).
func TestDescribeShowsConditions(t *testing.T) {
	// Room for the controllers' start, the waits for weft's status (90 s
	// each against a hang; the controllers write them all at once, so
	// after the first they are short) and six kubectl runs on a loaded
	// machine.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: releaseNamespace}); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()

	ns := "describe-" + strings.ToLower(rand.String(5))
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	create := func(y string) {
		t.Helper()
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(y), &u.Object); err != nil {
			t.Fatal(err)
		}
		u.SetNamespace(ns)
		if err := env.Client.Create(ctx, u); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	// One Service per MeshService and one MeshService per TrafficPolicy:
	// two claims on one Service would conflict.
	for _, svc := range []string{"reviews", "stock"} {
		create(`{apiVersion: v1, kind: Service, metadata: {name: ` + svc + `}, spec: {ports: [{port: 9080}]}}`)
	}
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: reviews},
 spec: {serviceName: reviews, ports: [{port: 9080, protocol: http}], subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}}`)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: stock},
 spec: {serviceName: stock, ports: [{port: 9080, protocol: http}], subsets: [{name: v1, labels: {version: v1}}]}}`)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshService, metadata: {name: ratings},
 spec: {serviceName: ratings, ports: [{port: 9080}]}}`)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficPolicy, metadata: {name: reviews-canary},
 spec: {targetRef: {name: reviews}, http: [{backends: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]}]}}`)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficPolicy, metadata: {name: stock-to-v4},
 spec: {targetRef: {name: stock}, http: [{backends: [{subset: v4, weight: 100}]}]}}`)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: PeerAuthentication, metadata: {name: default}, spec: {mode: STRICT}}`)
	// Created a second later, the second namespace-wide policy is the
	// younger of the two and conflicts.
	time.Sleep(1100 * time.Millisecond)
	create(`{apiVersion: mesh.weft.dev/v1alpha1, kind: PeerAuthentication, metadata: {name: also-default}, spec: {mode: PERMISSIVE}}`)

	tl := newTools(t, env)
	cases := []struct {
		resource, name string
		want           []describedCondition // Message: a part of it
	}{
		{"meshservice", "reviews", []describedCondition{
			{Type: "Accepted", Status: "True", Reason: "Accepted"},
			{Type: "ResolvedRefs", Status: "True", Reason: "ResolvedRefs"},
			{Type: "Ready", Status: "True", Reason: "Synced"},
		}},
		{"meshservice", "ratings", []describedCondition{
			{Type: "ResolvedRefs", Status: "False", Reason: "ServiceNotFound", Message: `spec.serviceName: Service "ratings" does not exist`},
			{Type: "Ready", Status: "False", Reason: "ServiceNotFound", Message: "spec.serviceName"},
			{Type: "Stalled", Status: "True", Reason: "ServiceNotFound", Message: "spec.serviceName"},
		}},
		{"trafficpolicy", "reviews-canary", []describedCondition{
			{Type: "Accepted", Status: "True", Reason: "Accepted"},
			{Type: "ResolvedRefs", Status: "True", Reason: "ResolvedRefs"},
			{Type: "Ready", Status: "True", Reason: "Synced"},
		}},
		{"trafficpolicy", "stock-to-v4", []describedCondition{
			{Type: "ResolvedRefs", Status: "False", Reason: "SubsetNotFound", Message: `spec.http[0].backends[0].subset: MeshService "stock" has no subset "v4" (its subsets: v1)`},
			{Type: "Ready", Status: "False", Reason: "SubsetNotFound", Message: "spec.http[0].backends[0].subset"},
			{Type: "Stalled", Status: "True", Reason: "SubsetNotFound", Message: "spec.http[0].backends[0].subset"},
		}},
		{"peerauthentication", "default", []describedCondition{
			{Type: "Accepted", Status: "True", Reason: "Accepted"},
			{Type: "Ready", Status: "True"},
		}},
		{"peerauthentication", "also-default", []describedCondition{
			{Type: "Accepted", Status: "False", Reason: "Conflicted", Message: `PeerAuthentication "default" is older`},
			{Type: "Stalled", Status: "True", Reason: "Conflicted", Message: `PeerAuthentication "default"`},
		}},
	}
	for _, c := range cases {
		// Wait for weft's status through the API, then describe once.
		if err := testenv.Eventually(ctx, 90*time.Second, func(ctx context.Context) error {
			return statusWritten(ctx, c.resource, ns, c.name, c.want)
		}); err != nil {
			t.Errorf("%s %s: weft wrote no status: %v", c.resource, c.name, err)
			continue
		}
		out, err := tl.kubectl(nil, "describe", c.resource, c.name, "--namespace", ns)
		if err != nil {
			t.Fatal(err)
		}
		shown, err := describedConditions(out)
		if err != nil {
			t.Errorf("kubectl describe %s %s: %v\n%s", c.resource, c.name, err, out)
			continue
		}
		for _, want := range c.want {
			if !slices.ContainsFunc(shown, want.matches) {
				t.Errorf("kubectl describe %s %s does not show %s=%s %s with a message containing %q; it shows:\n%s",
					c.resource, c.name, want.Type, want.Status, want.Reason, want.Message, out)
			}
		}
		for _, s := range shown {
			if s.Type == "" || s.Status == "" || s.Reason == "" || s.Message == "" {
				t.Errorf("kubectl describe %s %s shows a condition without Type, Status, Reason or Message: %+v", c.resource, c.name, s)
			}
		}
	}
}

// describedCondition is a condition as kubectl describe prints it.
type describedCondition struct{ Type, Status, Reason, Message string }

// matches: same Type, Status and (when set) Reason, and the message
// contains want's.
func (want describedCondition) matches(got describedCondition) bool {
	return got.Type == want.Type && got.Status == want.Status && (want.Reason == "" || got.Reason == want.Reason) &&
		strings.Contains(got.Message, want.Message)
}

// describedConditions reads the Conditions block under Status in kubectl
// describe's output of a custom resource:
//
//	Status:
//	  Conditions:
//	    Last Transition Time:  2026-11-25T08:00:00Z
//	    Message:               ...
//	    Observed Generation:   1
//	    Reason:                Accepted
//	    Status:                True
//	    Type:                  Accepted
//	    Last Transition Time:  ...
//
// A condition ends where a field it already has starts again.
func describedConditions(out string) ([]describedCondition, error) {
	var conds []describedCondition
	var cur map[string]string
	flush := func() {
		if cur != nil {
			conds = append(conds, describedCondition{Type: cur["Type"], Status: cur["Status"], Reason: cur["Reason"], Message: cur["Message"]})
		}
		cur = nil
	}
	inStatus, inConds, indent := false, false, -1
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		line := s.Text()
		trimmed := strings.TrimLeft(line, " ")
		depth := len(line) - len(trimmed)
		switch {
		case depth == 0:
			inStatus, inConds = line == "Status:", false
		case inStatus && !inConds && trimmed == "Conditions:":
			inConds, indent = true, -1
		case inConds:
			if indent == -1 {
				indent = depth
			}
			if depth < indent {
				inConds = false
				continue
			}
			if depth > indent {
				continue // a deeper field, not one of a condition
			}
			key, value, ok := strings.Cut(trimmed, ":")
			if !ok {
				return nil, fmt.Errorf("a condition's line without a colon: %q", line)
			}
			if _, seen := cur[key]; seen || cur == nil {
				flush()
				cur = map[string]string{}
			}
			cur[key] = strings.TrimSpace(value)
		}
	}
	flush()
	if len(conds) == 0 {
		return nil, fmt.Errorf("no Status.Conditions in the output")
	}
	return conds, nil
}

// statusWritten: the resource's status describes its generation and has
// conditions of every type want names, with want's status.
func statusWritten(ctx context.Context, resource, ns, name string, want []describedCondition) error {
	kinds := map[string]string{"meshservice": "MeshService", "trafficpolicy": "TrafficPolicy", "peerauthentication": "PeerAuthentication"}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("mesh.weft.dev/v1alpha1")
	u.SetKind(kinds[resource])
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
		return err
	}
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	if observed != u.GetGeneration() {
		return fmt.Errorf("observedGeneration %d, generation %d", observed, u.GetGeneration())
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, w := range want {
		found := false
		for _, c := range conds {
			c, _ := c.(map[string]any)
			if c["type"] == w.Type && c["status"] == w.Status {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no %s=%s among %v", w.Type, w.Status, conds)
		}
	}
	return nil
}
