package controllers_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/wire"
)

func peerAuth(ns, name string, mode meshv1.MTLSMode, selector map[string]string) *meshv1.PeerAuthentication {
	p := &meshv1.PeerAuthentication{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       meshv1.PeerAuthenticationSpec{Mode: mode},
	}
	if selector != nil {
		p.Spec.Selector = &meshv1.WorkloadSelector{MatchLabels: selector}
	}
	return p
}

func pod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
	}
}

func waitScope(t *testing.T, p *meshv1.PeerAuthentication, scope meshv1.PeerAuthenticationScope, workloads int32) {
	t.Helper()
	err := eventually(func(ctx context.Context) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), p); err != nil {
			return err
		}
		if p.Status.Scope != scope || p.Status.Workloads != workloads {
			return errorf("scope %q with %d workloads, want %q with %d", p.Status.Scope, p.Status.Workloads, scope, workloads)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Scopes and workload counts follow the pods; two namespace-wide policies
// conflict and the older wins.
func TestPeerAuthenticationScopesAndConflicts(t *testing.T) {
	ns := newNamespace(t, map[string]string{wire.LabelInject: wire.InjectEnabled})
	create(t, pod(ns, "db-0", map[string]string{"app": "db"}))
	create(t, pod(ns, "web-0", map[string]string{"app": "web"}))

	nsWide := peerAuth(ns, "default", meshv1.MTLSStrict, nil)
	create(t, nsWide)
	waitFor(t, nsWide, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""}, synced)
	waitScope(t, nsWide, meshv1.ScopeNamespace, 2)

	dbOnly := peerAuth(ns, "db", meshv1.MTLSPermissive, map[string]string{"app": "db"})
	create(t, dbOnly)
	waitScope(t, dbOnly, meshv1.ScopeWorkload, 1)
	waitFor(t, dbOnly, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})

	// A new pod moves the counts of the policies that cover it.
	create(t, pod(ns, "db-1", map[string]string{"app": "db"}))
	waitScope(t, dbOnly, meshv1.ScopeWorkload, 2)
	waitScope(t, nsWide, meshv1.ScopeNamespace, 3)

	time.Sleep(1100 * time.Millisecond)
	second := peerAuth(ns, "also-default", meshv1.MTLSDisable, nil)
	create(t, second)
	waitFor(t, second, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonConflicted,
		`PeerAuthentication "default" is older and already covers namespace ` + ns})

	// A selector that overlaps an older one on a pod conflicts too.
	overlap := peerAuth(ns, "tier", meshv1.MTLSStrict, nil)
	overlap.Spec.Selector = &meshv1.WorkloadSelector{MatchExpressions: []meshv1.SelectorRequirement{{
		Key: "app", Operator: "In", Values: []string{"db", "cache"},
	}}}
	create(t, overlap)
	waitFor(t, overlap, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonConflicted, `PeerAuthentication "db" is older and also selects pod "db-`})

	// A key the schema lets through but a selector cannot parse: its
	// prefix is not a DNS subdomain.
	bad := peerAuth(ns, "bad", meshv1.MTLSStrict, nil)
	bad.Spec.Selector = &meshv1.WorkloadSelector{MatchExpressions: []meshv1.SelectorRequirement{{Key: "example..com/app", Operator: "Exists"}}}
	create(t, bad)
	waitFor(t, bad, want{meshv1.ConditionAccepted, metav1.ConditionFalse, meshv1.ReasonInvalid, "spec.selector:"})

	// Removing the older namespace-wide policy lets the other take over.
	if err := env.Client.Delete(context.Background(), nsWide); err != nil {
		t.Fatal(err)
	}
	waitFor(t, second, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, ""})
}

// A policy without selector in the mesh namespace covers every meshed
// namespace's pods, and follows namespaces opting in.
func TestPeerAuthenticationMeshWide(t *testing.T) {
	_ = env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNamespace}})
	mesh := peerAuth(meshNamespace, "mesh", meshv1.MTLSStrict, nil)
	create(t, mesh)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), mesh) })
	waitFor(t, mesh, want{meshv1.ConditionAccepted, metav1.ConditionTrue, meshv1.ReasonAccepted, "Mesh scope"})

	// Count what the mesh covers now (other tests' namespaces included),
	// then opt a namespace in and watch the count grow by its pods.
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(mesh), mesh); err != nil {
		t.Fatal(err)
	}
	waitScope(t, mesh, meshv1.ScopeMesh, mesh.Status.Workloads)
	before := mesh.Status.Workloads

	ns := newNamespace(t, nil)
	create(t, pod(ns, "a", nil))
	create(t, pod(ns, "b", nil))
	update(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, func(n *corev1.Namespace) {
		n.Labels = map[string]string{wire.LabelInject: wire.InjectEnabled}
	})
	waitScope(t, mesh, meshv1.ScopeMesh, before+2)
}
