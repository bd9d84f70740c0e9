package watch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/watch"
)

// models records what the watcher publishes.
type models struct {
	mu   sync.Mutex
	list []*mesh.Model
}

func (m *models) publish(_ context.Context, model *mesh.Model) {
	m.mu.Lock()
	m.list = append(m.list, model)
	m.mu.Unlock()
}

func (m *models) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.list)
}

func (m *models) last() *mesh.Model {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.list) == 0 {
		return nil
	}
	return m.list[len(m.list)-1]
}

// The watcher follows the real API server through an informer cache: a new
// MeshService and its Service reach a published model; the changes the
// model does not depend on (a MeshService's status, a pod's annotations)
// publish nothing; a pod's labels do.
func TestWatcherRebuildsOnWhatTheModelReads(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	got := &models{}
	const quiet = 50 * time.Millisecond
	w := &watch.Watcher{Cache: c, Reader: c, Clock: clock.RealClock{}, Quiet: quiet, MaxDelay: 500 * time.Millisecond,
		ClusterDomain: "cluster.local", MeshNamespace: "weft-system", TrustDomain: "cluster.local", Publish: got.publish}
	go func() { _ = c.Start(ctx) }()
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the watcher ended with %v", err)
		}
	})

	// eventually waits for a published model that satisfies ok.
	eventually := func(what string, ok func(*mesh.Model) error) {
		t.Helper()
		err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
			m := got.last()
			if m == nil {
				return fmt.Errorf("no model published yet")
			}
			return ok(m)
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// settled waits until no model was published for a while, and returns
	// how many were.
	settled := func() int {
		t.Helper()
		n := got.count()
		for range 100 {
			time.Sleep(10 * quiet)
			if m := got.count(); m == n {
				return n
			}
			n = got.count()
		}
		t.Fatal("models kept coming for 50 s with nothing changing")
		return 0
	}
	eventually("the first model", func(*mesh.Model) error { return nil })

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"mesh.weft.dev/inject": "enabled"}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{{Name: "grpc", Port: 9080}}}}
	ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews"},
		Spec: meshv1.MeshServiceSpec{ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews-1", Labels: map[string]string{"app": "reviews"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/reviews:1"}}}}
	for _, o := range []client.Object{ns, svc, ms, pod} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	eventually("the MeshService in the model", func(m *mesh.Model) error {
		s := m.Services["shop/reviews"]
		if s == nil || len(s.Ports) != 1 || s.Ports[0].Number != 9080 {
			return fmt.Errorf("model services %v", m.Order)
		}
		return nil
	})

	// What the model does not read publishes nothing.
	before := settled()
	ms.Status.Conditions = []metav1.Condition{{Type: meshv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Test", Message: "status only", LastTransitionTime: metav1.Now()}}
	if err := env.Client.Status().Update(ctx, ms); err != nil {
		t.Fatal(err)
	}
	pod.Annotations = map[string]string{"example.com/note": "annotations only"}
	if err := env.Client.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if after := settled(); after != before {
		t.Errorf("a status update and a pod annotation published %d models; the model reads neither", after-before)
	}

	// A pod's labels are read (subsets, PeerAuthentication selectors).
	// The model says when the change was seen: after the update was sent,
	// not when an earlier change was.
	pod.Labels["version"] = "v2"
	sent := time.Now()
	if err := env.Client.Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		if got.count() == before {
			return fmt.Errorf("no model after a pod's labels changed")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if m := got.last(); m.Changed.Before(sent) || m.Changed.After(time.Now()) {
		t.Errorf("the model says its change was seen at %v; the update was sent at %v", m.Changed, sent)
	}

	// A deleted MeshService leaves the model.
	if err := env.Client.Delete(ctx, ms); err != nil {
		t.Fatal(err)
	}
	eventually("the MeshService gone from the model", func(m *mesh.Model) error {
		if m.Services["shop/reviews"] != nil {
			return fmt.Errorf("still in the model")
		}
		return nil
	})
}
