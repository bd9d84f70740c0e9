package identity

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestBundleLoaderFollowsTheConfigMap: with an issuer weft asks, the trust
// bundle is a ConfigMap someone else keeps. The loader waits for it,
// takes certificates only (re-encoded: nothing else in the key reaches a
// peer), follows a change (a second root added), and keeps the last good
// bundle when the ConfigMap turns empty or unreadable.
func TestBundleLoaderFollowsTheConfigMap(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := "weft-bundle"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int32
	l := &BundleLoader{Client: env.Client, Namespace: ns, Log: testr.New(t), Retry: 100 * time.Millisecond, Reload: 200 * time.Millisecond,
		OnChange: func() { changes.Add(1) }}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	if l.Bundle() != nil {
		t.Fatal("a bundle was loaded before its ConfigMap existed")
	}

	first, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	one := EncodeCerts([][]byte{first.Cert.Raw})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: DefaultTrustBundle},
		Data: map[string]string{BundleKey: "# the corporate roots\n" + string(one) + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}
	if err := env.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	wait := func(want []byte, what string) {
		t.Helper()
		if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
			if got := l.Bundle(); string(got) != string(want) {
				return fmt.Errorf("%s: the loader has %q", what, got)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	wait(one, "the first bundle, certificates only")
	if changes.Load() != 0 {
		t.Fatal("the first bundle counted as a change")
	}

	both := EncodeCerts([][]byte{first.Cert.Raw, second.Cert.Raw})
	cm.Data[BundleKey] = string(both)
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	wait(both, "both roots")
	if changes.Load() != 1 {
		t.Fatalf("%d changes after a root was added, want 1", changes.Load())
	}

	// Emptied, then deleted: the last good bundle stays.
	cm.Data[BundleKey] = ""
	if err := env.Client.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := env.Client.Delete(ctx, cm); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := l.Bundle(); string(got) != string(both) {
		t.Fatalf("after the ConfigMap was emptied and deleted the bundle is %q, want the last good one", got)
	}
	if changes.Load() != 1 {
		t.Fatalf("%d changes, want none after the bundle turned unreadable", changes.Load())
	}
}
