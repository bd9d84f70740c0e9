package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

func bundleOf(ctx context.Context, ns string) (string, error) {
	var cm corev1.ConfigMap
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &cm); err != nil {
		return "", err
	}
	return cm.Data[wire.BundleKey], nil
}

// The root bundle reaches every meshed namespace (labelled for injection,
// or holding a MeshService) and no other, and leaves a namespace that
// leaves the mesh; a ConfigMap of that name that weft did not make is
// left alone.
func TestRootBundlePublished(t *testing.T) {
	// Room for the four waits below, each bounded at 60 s against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mk := func(name string, labels map[string]string) {
		t.Helper()
		if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
	}
	mk("bundle-injected", map[string]string{"mesh.weft.dev/inject": "enabled"})
	mk("bundle-services", nil)
	mk("bundle-plain", nil)
	mk("bundle-theirs", nil)
	if err := env.Client.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "bundle-services", Name: "reviews"},
		Spec: meshv1.MeshServiceSpec{ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080}}}}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"bundle-injected", "bundle-services"} {
		if err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
			got, err := bundleOf(ctx, ns)
			if err != nil {
				return err
			}
			if got != string(testBundle) {
				return fmt.Errorf("bundle in %s is %q", ns, got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	// A rotation: the new bundle reaches the meshed namespaces at once.
	rotated := append([]byte("# rotated\n"), testBundle...)
	published.Store(&rotated)
	t.Cleanup(func() { published.Store(&testBundle) })
	bundleChanged <- struct{}{}
	if err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
		if got, err := bundleOf(ctx, "bundle-services"); err != nil || got != string(rotated) {
			return fmt.Errorf("the bundle after a rotation: %q, %v", got, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A user's own ConfigMap of the same name in a namespace that is not
	// meshed stays.
	theirs := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "bundle-theirs", Name: wire.BundleConfigMap}, Data: map[string]string{"x": "y"}}
	if err := env.Client.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}

	// The injected namespace leaves the mesh.
	var ns corev1.Namespace
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "bundle-injected"}, &ns); err != nil {
		t.Fatal(err)
	}
	delete(ns.Labels, "mesh.weft.dev/inject")
	if err := env.Client.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
		if _, err := bundleOf(ctx, "bundle-injected"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the bundle is still there: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Poke the other namespaces and give the publisher time to act.
	for _, name := range []string{"bundle-plain", "bundle-theirs"} {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = map[string]string{"touched": "yes"}
		if err := env.Client.Update(ctx, &ns); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	if _, err := bundleOf(ctx, "bundle-plain"); !apierrors.IsNotFound(err) {
		t.Errorf("a namespace outside the mesh has a bundle: %v", err)
	}
	if got, err := bundleOf(ctx, "bundle-theirs"); err != nil || got != "" {
		t.Errorf("the user's ConfigMap changed or went: %q, %v", got, err)
	}
}
