package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

// newNamespace creates a namespace of the test's own.
func newNamespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   "t-" + strings.ToLower(rand.String(6)),
		Labels: labels,
	}}
	create(t, ns)
	return ns.Name
}

func create(t *testing.T, o client.Object) {
	t.Helper()
	if err := env.Client.Create(context.Background(), o); err != nil {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// objectWithConditions is a weft object whose conditions a test can read.
type objectWithConditions interface {
	client.Object
	conditions() []metav1.Condition
}

type conditionsOf struct {
	client.Object
	get func() []metav1.Condition
}

func (c conditionsOf) conditions() []metav1.Condition { return c.get() }

func withConds(o client.Object) objectWithConditions {
	switch v := o.(type) {
	case *meshv1.MeshService:
		return conditionsOf{v, func() []metav1.Condition { return v.Status.Conditions }}
	case *meshv1.TrafficPolicy:
		return conditionsOf{v, func() []metav1.Condition { return v.Status.Conditions }}
	case *meshv1.PeerAuthentication:
		return conditionsOf{v, func() []metav1.Condition { return v.Status.Conditions }}
	}
	panic(fmt.Sprintf("no conditions on %T", o))
}

// want is an expected condition; an empty Reason or MessageHas matches
// anything.
type want struct {
	Type       string
	Status     metav1.ConditionStatus
	Reason     string
	MessageHas string
}

// waitFor polls the live object (not a cache) until every wanted condition
// holds for its current generation, and returns the last read.
func waitFor(t *testing.T, o client.Object, wants ...want) {
	t.Helper()
	wc := withConds(o)
	err := testenv.Eventually(context.Background(), 60*time.Second, func(ctx context.Context) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			return err
		}
		for _, w := range wants {
			c := meta.FindStatusCondition(wc.conditions(), w.Type)
			switch {
			case c == nil:
				return fmt.Errorf("no %s condition", w.Type)
			case c.ObservedGeneration != o.GetGeneration():
				return fmt.Errorf("%s is for generation %d, not %d", w.Type, c.ObservedGeneration, o.GetGeneration())
			case c.Status != w.Status || (w.Reason != "" && c.Reason != w.Reason) || !strings.Contains(c.Message, w.MessageHas):
				return fmt.Errorf("%s is %s/%s %q, want %s/%s containing %q", w.Type, c.Status, c.Reason, c.Message, w.Status, w.Reason, w.MessageHas)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%T %s: %v", o, o.GetName(), err)
	}
}

// noCondition waits until a condition type is absent.
func noCondition(t *testing.T, o client.Object, condType string) {
	t.Helper()
	wc := withConds(o)
	err := testenv.Eventually(context.Background(), 60*time.Second, func(ctx context.Context) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(wc.conditions(), condType); c != nil {
			return fmt.Errorf("%s still present: %s/%s", condType, c.Status, c.Reason)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%T %s: %v", o, o.GetName(), err)
	}
}

// kstatus computes what Flux and other kstatus readers make of o.
func kstatusOf(t *testing.T, o client.Object) kstatus.Status {
	t.Helper()
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(o), o); err != nil {
		t.Fatal(err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: m})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

func service(ns, name string, ports ...int32) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": name}},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p})
	}
	return s
}

func meshService(ns, name string, ports ...int32) *meshv1.MeshService {
	m := &meshv1.MeshService{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: meshv1.MeshServiceSpec{
			ServiceName: name,
			Subsets: []meshv1.Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2"}},
			},
		},
	}
	for _, p := range ports {
		m.Spec.Ports = append(m.Spec.Ports, meshv1.MeshServicePort{Port: p, Protocol: meshv1.ProtocolHTTP})
	}
	return m
}

func split(ns, name, target string, backends ...meshv1.WeightedBackend) *meshv1.TrafficPolicy {
	return &meshv1.TrafficPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: meshv1.TrafficPolicySpec{
			TargetRef: meshv1.TargetRef{Name: target},
			HTTP:      []meshv1.HTTPRoute{{Backends: backends}},
		},
	}
}

type corev1ObjectReference = corev1.ObjectReference

func typesUID(s string) types.UID { return types.UID("uid-" + s) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func eventually(check func(context.Context) error) error {
	return testenv.Eventually(context.Background(), 60*time.Second, check)
}

func containsKey(raw []byte, key string) bool {
	return strings.Contains(string(raw), key)
}

// conflictBackoff paces update's retries. retry.DefaultRetry gives up after
// five tries 10 ms apart, which a reconciler slowed by a loaded machine can
// outlast with its status writes; this keeps retrying for about 10 s.
var conflictBackoff = wait.Backoff{Steps: 10, Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Cap: 2 * time.Second}

// update re-reads o, applies mutate and writes it, retrying on conflicts
// with the reconcilers' status writes.
func update[T client.Object](t *testing.T, o T, mutate func(T)) {
	t.Helper()
	err := retry.RetryOnConflict(conflictBackoff, func() error {
		if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(o), o); err != nil {
			return err
		}
		mutate(o)
		return env.Client.Update(context.Background(), o)
	})
	if err != nil {
		t.Fatalf("updating %T %s: %v", o, o.GetName(), err)
	}
}
