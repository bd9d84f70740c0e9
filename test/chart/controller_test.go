package chart_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// runControllerAsChart runs the weft binary with the arguments of the
// installed Deployment, authenticated as the chart's ServiceAccount (a
// token from the TokenRequest API), and checks that it does its work with
// only the chart's RBAC: it takes the leader Lease, makes the root CA
// Secret, publishes the root bundle into a namespace that joins the mesh,
// and takes it away when the namespace leaves, writes the status of
// every custom resource, and keeps its drain Lease; no request is refused.
//
// The injector serves on a loopback port with the certificate weft signs:
// the leader fills the webhook configuration's caBundle, and a TLS client
// that trusts only that caBundle, dialling the Service's DNS name, reaches
// it. What this does not cover: the xDS server's per-stream checks
// (TokenReview, the proxy's pod), which need a connected proxy.
func runControllerAsChart(ctx context.Context, t *testing.T, e *testenv.Env, meshed string, objs []*unstructured.Unstructured) {
	t.Helper()
	dir := t.TempDir()
	webhookPort, metricsPort := freePort(t), freePort(t)
	bin := testenv.Binary(t, "weft")

	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(releaseNamespace).CreateToken(ctx, "weft-controller",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a token for the chart's ServiceAccount: %v", err)
	}
	kc, err := testenv.KubeconfigFor(&rest.Config{Host: e.Config.Host, TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData},
		BearerToken: tr.Status.Token})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	var d appsv1.Deployment
	if err := e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "weft-controller"}, &d); err != nil {
		t.Fatal(err)
	}
	args := append([]string{}, d.Spec.Template.Spec.Containers[0].Args...)
	// The chart's arguments, but on loopback ports the test picks, and
	// without the injector (no serving certificate without cert-manager).
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--metrics-bind-address="):
			args[i] = "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort)
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			args[i] = "--health-probe-bind-address=127.0.0.1:0"
		case strings.HasPrefix(a, "--xds-bind-address="):
			args[i] = "--xds-bind-address=127.0.0.1:0"
		case strings.HasPrefix(a, "--webhook-port="):
			args[i] = "--webhook-port=" + strconv.Itoa(webhookPort)
		}
	}
	args = append(args, "--kubeconfig="+kubeconfig, "--xds-status-bind-address=127.0.0.1:0")

	if !slices.Contains(args, "--webhook-configuration=weft-injector") {
		t.Fatalf("the chart does not have weft fill the injector's caBundle: %v", args)
	}

	runCtx, stop := context.WithCancel(ctx)
	cmd := exec.CommandContext(runCtx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		stop()
		if err := <-exited; err != nil && runCtx.Err() == nil {
			t.Errorf("weft controller: %v", err)
		}
		if t.Failed() {
			t.Logf("weft controller's log:\n%s", logs.String())
		}
	}()

	// A namespace with no MeshService joins the mesh by its label: the root
	// bundle must appear there (and in meshed, which holds MeshServices).
	joiner := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "storefront",
		Labels: map[string]string{"mesh.weft.dev/inject": "enabled"}}}
	if err := e.Client.Create(ctx, joiner); err != nil {
		t.Fatal(err)
	}

	checks := []struct {
		what  string
		check func(context.Context) error
	}{
		{"the leader Lease", func(ctx context.Context) error {
			var l coordinationv1.Lease
			return e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "weft-controller.mesh.weft.dev"}, &l)
		}},
		{"this replica's drain Lease, renewed", func(ctx context.Context) error {
			var list coordinationv1.LeaseList
			if err := e.Client.List(ctx, &list, client.InNamespace(releaseNamespace), client.HasLabels{wire.LabelDrainReplica}); err != nil {
				return err
			}
			for _, l := range list.Items {
				if l.Spec.HolderIdentity != nil && l.Spec.RenewTime != nil && l.Spec.AcquireTime != nil && l.Spec.RenewTime.After(l.Spec.AcquireTime.Time) {
					return nil
				}
			}
			return fmt.Errorf("no renewed drain Lease among %d", len(list.Items))
		}},
		{"the root CA Secret", func(ctx context.Context) error {
			var s corev1.Secret
			return e.Client.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "weft-root-ca"}, &s)
		}},
		{"the root bundle in the labelled namespace", func(ctx context.Context) error {
			var cm corev1.ConfigMap
			return e.Client.Get(ctx, client.ObjectKey{Namespace: joiner.Name, Name: "weft-root-ca"}, &cm)
		}},
		{"the root bundle in the namespace with MeshServices", func(ctx context.Context) error {
			var cm corev1.ConfigMap
			return e.Client.Get(ctx, client.ObjectKey{Namespace: meshed, Name: "weft-root-ca"}, &cm)
		}},
		{"the injector's caBundle, and the injector serving a certificate it trusts", func(ctx context.Context) error {
			var w admissionregistrationv1.MutatingWebhookConfiguration
			if err := e.Client.Get(ctx, client.ObjectKey{Name: "weft-injector"}, &w); err != nil {
				return err
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(w.Webhooks[0].ClientConfig.CABundle) {
				return errors.New("caBundle holds no certificate")
			}
			return askInjector(ctx, webhookPort, roots, meshed)
		}},
		{"InjectionSkipped Event for the pod the injector was asked about (its namespace is not labelled)", func(ctx context.Context) error {
			var list eventsv1.EventList
			if err := e.Client.List(ctx, &list, client.InNamespace(meshed)); err != nil {
				return err
			}
			for _, ev := range list.Items {
				if ev.Reason == wire.EventInjectionSkipped && ev.Regarding.Kind == "Pod" && ev.Regarding.Name == "p" {
					return nil
				}
			}
			return fmt.Errorf("none among %d Events", len(list.Items))
		}},
		{"metrics server declining HTTP/2", func(ctx context.Context) error {
			// Only the protocol is checked here: the server's certificate is
			// its own, self-signed, and what it serves needs a token.
			d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}} //nolint:gosec // ALPN only
			conn, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(metricsPort))
			if err != nil {
				return err
			}
			defer conn.Close()
			if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "http/1.1" {
				return fmt.Errorf("the metrics server negotiated %q with a client offering h2 and http/1.1", p)
			}
			return nil
		}},
		{"the status of every custom resource", func(ctx context.Context) error {
			for _, o := range objs {
				got := o.DeepCopy()
				if err := e.Client.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
					return err
				}
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				if len(conds) < 3 { // Accepted, ResolvedRefs, Ready
					return fmt.Errorf("%s %s has conditions %v", got.GetKind(), got.GetName(), conds)
				}
			}
			return nil
		}},
	}
	for _, c := range checks {
		if err := testenv.Eventually(ctx, time.Minute, c.check); err != nil {
			t.Errorf("with the chart's RBAC, no %s: %v", c.what, err)
		}
	}
	// The labelled namespace leaves the mesh: the bundle goes (weft reads
	// it first, to delete only its own).
	var ns corev1.Namespace
	if err := e.Client.Get(ctx, client.ObjectKeyFromObject(joiner), &ns); err != nil {
		t.Fatal(err)
	}
	ns.Labels = nil
	if err := e.Client.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var cm corev1.ConfigMap
		err := e.Client.Get(ctx, client.ObjectKey{Namespace: joiner.Name, Name: "weft-root-ca"}, &cm)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("the root bundle is still in %s (%v)", joiner.Name, err)
	}); err != nil {
		t.Errorf("with the chart's RBAC: %v", err)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "forbidden") || strings.Contains(line, "Forbidden") {
			t.Errorf("the chart's RBAC refused the controller: %s", line)
		}
	}
}

// syncBuffer is a bytes.Buffer that a process and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freePort returns a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// askInjector sends the injector an AdmissionReview for a pod of namespace,
// as the API server would, over TLS that trusts only roots and checks the
// Service's DNS name, and wants an answer to that review. It offers HTTP/2,
// which the injector must decline (HTTP/1.1 only without --enable-http2).
func askInjector(ctx context.Context, port int, roots *x509.CertPool, namespace string) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{
		RootCAs: roots, ServerName: "weft-controller." + releaseNamespace + ".svc", MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	pod, err := json.Marshal(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: namespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}})
	if err != nil {
		return err
	}
	review := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "review-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: namespace, Name: "p",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: pod}}}
	body, err := json.Marshal(&review)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		fmt.Sprintf("https://127.0.0.1:%d/inject-pod", port), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.Proto != "HTTP/1.1" {
		return fmt.Errorf("the injector speaks %s to a client offering h2 and http/1.1; want HTTP/1.1 only", resp.Proto)
	}
	var answer admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("the injector answered %s: %w", resp.Status, err)
	}
	if answer.Response == nil || answer.Response.UID != "review-1" || !answer.Response.Allowed {
		return fmt.Errorf("the injector answered %+v", answer.Response)
	}
	return nil
}
