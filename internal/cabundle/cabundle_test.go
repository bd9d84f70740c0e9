package cabundle_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/cabundle"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
)

// TestAPIServerTrustsWeftsWebhookCertificate: a webhook served with a
// certificate from the mesh CA (identity.ServerTLS, as the controller
// serves the injector) is refused by the real API server until the
// Injector has written the mesh roots into the configuration's caBundle,
// and called once it has. The Injector writes nothing when the bundle is
// in place, puts it back when someone empties it, takes a rotated bundle,
// and leaves every other field alone.
func TestAPIServerTrustsWeftsWebhookCertificate(t *testing.T) {
	env := testenv.ForTest(t)
	// Room for the five waits below, each bounded at 60 s against a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	first, err := identity.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var root atomic.Pointer[identity.Root]
	root.Store(&identity.Root{CA: first, Bundle: identity.EncodeCerts([][]byte{first.Cert.Raw})})
	current := root.Load
	bundle := func() []byte { return current().Bundle }

	// The webhook: refuses every pod, saying it was called.
	srvTLS := identity.ServerTLS(current, []string{"localhost"},
		identity.ID{TrustDomain: "cluster.local", Namespace: "weft-system", ServiceAccount: "weft-controller"})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvTLS)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(refuse), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	ns := "guarded"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"guard": "on"}}}); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://localhost:%d/refuse", port)
	fail, none, timeout := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone, int32(5)
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "inject.mesh.weft.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"guard": "on"}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
		}},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	createPod := func(ctx context.Context) error {
		return env.Client.Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		})
	}
	// Not trusted yet: the API server cannot call the webhook. It applies
	// a new configuration only once its own informer has it, and a call
	// can time out on a loaded machine, so a create that goes through or
	// fails otherwise is tried again; only a refusal for the certificate
	// ends the wait, and a call that reached the webhook fails the test.
	var reached error
	if err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
		err := createPod(ctx)
		switch {
		case err != nil && strings.Contains(err.Error(), refusal):
			reached = err
			return nil
		case err == nil || !strings.Contains(err.Error(), "certificate"):
			return fmt.Errorf("creating a pod: %v; want a certificate error", err)
		}
		return nil
	}); err != nil {
		t.Fatalf("before the caBundle is written: %v", err)
	}
	if reached != nil {
		t.Fatalf("before the caBundle is written, the API server called the webhook: %v", reached)
	}

	in := &cabundle.Injector{Client: env.Client, Name: "weft-injector", Bundle: bundle, Log: testr.New(t)}
	if err := in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	calledByAPIServer := func(ctx context.Context) error {
		err := createPod(ctx)
		if err != nil && strings.Contains(err.Error(), refusal) {
			return nil
		}
		return fmt.Errorf("creating a pod: %v", err)
	}
	if err := testenv.Eventually(ctx, 60*time.Second, calledByAPIServer); err != nil {
		t.Fatalf("after the caBundle was written, the API server does not call the webhook: %v", err)
	}
	var got admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "weft-injector"}, &got); err != nil {
		t.Fatal(err)
	}
	if *got.Webhooks[0].FailurePolicy != fail || *got.Webhooks[0].ClientConfig.URL != url || *got.Webhooks[0].TimeoutSeconds != timeout {
		t.Errorf("the Injector changed more than caBundle: %+v", got.Webhooks[0])
	}

	// In place: nothing is written.
	rv := got.ResourceVersion
	if err := in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "weft-injector"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != rv {
		t.Errorf("a second Sync wrote the configuration (resourceVersion %s → %s)", rv, got.ResourceVersion)
	}

	// Running: an emptied caBundle comes back at the next resync, a
	// rotated bundle at once.
	changed := make(chan struct{}, 1)
	run := &cabundle.Injector{Client: env.Client, Name: "weft-injector", Bundle: bundle, Changed: changed,
		Log: testr.New(t), Resync: 500 * time.Millisecond, Wait: 100 * time.Millisecond}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	got.Webhooks[0].ClientConfig.CABundle = nil
	if err := env.Client.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 60*time.Second, hasBundle(env.Client, bundle)); err != nil {
		t.Errorf("an emptied caBundle was not restored: %v", err)
	}

	second, err := identity.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root.Store(&identity.Root{CA: second, Bundle: identity.EncodeCerts([][]byte{first.Cert.Raw, second.Cert.Raw})})
	changed <- struct{}{}
	if err := testenv.Eventually(ctx, 60*time.Second, hasBundle(env.Client, bundle)); err != nil {
		t.Errorf("a rotated bundle was not written: %v", err)
	}
	if err := testenv.Eventually(ctx, 60*time.Second, calledByAPIServer); err != nil {
		t.Errorf("after the rotation, the API server does not call the webhook: %v", err)
	}

	// No configuration (injector off): not an error.
	missing := &cabundle.Injector{Client: env.Client, Name: "no-such-configuration", Bundle: bundle, Log: testr.New(t)}
	if err := missing.Sync(ctx); err != nil {
		t.Errorf("a missing configuration: %v", err)
	}
	// Roots not loaded: an error that says so.
	unloaded := &cabundle.Injector{Client: env.Client, Name: "weft-injector", Bundle: func() []byte { return nil }, Log: testr.New(t)}
	if err := unloaded.Sync(ctx); err == nil || !strings.Contains(err.Error(), "not loaded") {
		t.Errorf("with no roots loaded: %v", err)
	}
}

const refusal = "called by the API server over TLS"

// refuse answers an AdmissionReview with a refusal.
func refuse(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: false,
		Result: &metav1.Status{Message: refusal, Code: http.StatusForbidden}}
	review.Request = nil
	_ = json.NewEncoder(w).Encode(&review)
}

func hasBundle(c client.Client, bundle func() []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		var got admissionregistrationv1.MutatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "weft-injector"}, &got); err != nil {
			return err
		}
		if string(got.Webhooks[0].ClientConfig.CABundle) != string(bundle()) {
			return errors.New("caBundle is not the current bundle")
		}
		return nil
	}
}

// TestForeignCAKeptForAGrace: when the install switches from cert-manager's
// webhook certificate to weft's, the caBundle holds cert-manager's CA; the
// Injector adds the mesh roots and keeps that CA beside them for its grace
// period (replicas of the previous version still serve its certificate
// during the rollout), then drops it.
func TestForeignCAKeptForAGrace(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mesh, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certManager, err := identity.NewRoot("cert-manager", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := identity.EncodeCerts([][]byte{mesh.Cert.Raw})
	foreign := identity.EncodeCerts([][]byte{certManager.Cert.Raw})
	url := "https://localhost:1/x"
	none := admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "switching"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.mesh.weft.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: &none,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: foreign}}},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := &cabundle.Injector{Client: env.Client, Name: "switching", Bundle: func() []byte { return roots }, Log: testr.New(t),
		Grace: 10 * time.Minute, Now: func() time.Time { return now }}
	caBundle := func() string {
		t.Helper()
		var got admissionregistrationv1.MutatingWebhookConfiguration
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "switching"}, &got); err != nil {
			t.Fatal(err)
		}
		return string(got.Webhooks[0].ClientConfig.CABundle)
	}
	if err := in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := caBundle(); got != string(roots)+string(foreign) {
		t.Fatalf("during the grace period the caBundle is\n%s\nwant the mesh roots and cert-manager's CA", got)
	}
	now = now.Add(9 * time.Minute)
	if err := in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := caBundle(); got != string(roots)+string(foreign) {
		t.Fatal("cert-manager's CA was dropped before its grace period ended")
	}
	now = now.Add(2 * time.Minute)
	if err := in.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := caBundle(); got != string(roots) {
		t.Fatalf("after the grace period the caBundle is\n%s\nwant the mesh roots only", got)
	}
}
