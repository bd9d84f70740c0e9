package test

import (
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr/testr"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/identity/certmanager"
	"github.com/weftmesh/weft/internal/identity/identitytest"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

const (
	issuerNS   = "weft-system"
	issuerXDS  = "weft-controller.weft-system.svc"
	weftSAUser = "system:serviceaccount:weft-system:weft-controller"
	// The rollout's request budget: a burst of 2, then 4 a second.
	issuerQPS, issuerBurst = 4, 2
)

// TestCertManagerSignsEveryLeaf runs weft with --ca=cert-manager as the
// chart sets it up: the xDS server's leaves come from Leaves, its serving
// certificate and every leaf from CertificateRequests to cert-manager's CA
// issuer (its own controllers, hack/tools/certmanager, standing in for an
// issuer that never releases its key), checked against the trust bundle
// in a ConfigMap. weft's parts use the chart's RBAC for this mode
// (impersonating its ServiceAccount), and the audit log shows what they
// did: no Secret read, no request approved.
func TestCertManagerSignsEveryLeaf(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join(root, "bin", "cert-manager-controller")
	helm := filepath.Join(root, "bin", "helm")
	for _, b := range []string{harness, helm} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s is missing (%v): run 'make tools'", filepath.Base(b), err)
		}
	}
	dir := t.TempDir()
	auditLog := filepath.Join(dir, "audit.log")
	env, err := testenv.StartWith(testenv.Options{AuditLog: auditLog, CRDDirs: []string{
		filepath.Join(root, "config", "crd", "bases"),
		filepath.Join(root, "test", "chart", "testdata", "cert-manager"),
		filepath.Join(root, "hack", "certmanager", "crds"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	t.Cleanup(cancel)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	admin, err := client.NewWithWatch(env.Config, client.Options{Scheme: withCertManager(env.Scheme)})
	must(err)
	for _, n := range []string{issuerNS, "cert-manager", "shop"} {
		must(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}))
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	cm := runCertManager(t, harness, kubeconfig, filepath.Join(dir, "cert-manager.log"))
	for _, o := range decodeAll(t, []byte(cmIssuers)) {
		must(admin.Create(ctx, o))
	}
	must(waitReady(ctx, admin, issuerNS, "Issuer", "mesh-root"))
	cmRoot := secretCerts(t, ctx, admin, issuerNS, "mesh-root", "ca.crt")[0]
	rootPEM := identity.EncodeCerts([][]byte{cmRoot.Raw})
	// The trust bundle, as trust-manager (or the admin) publishes it.
	must(admin.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: issuerNS, Name: identity.DefaultTrustBundle},
		Data: map[string]string{identity.BundleKey: string(rootPEM)}}))

	// weft's RBAC as the chart renders it for this mode, and a client
	// with the controller's ServiceAccount.
	rbac := helmTemplate(t, helm, root, dir, "mesh.ca.source=certManagerIssuer,mesh.ca.issuerRef.name=mesh-root,mesh.ca.issuerRef.kind=Issuer",
		"templates/namespace-rbac.yaml", "templates/clusterrole.yaml")
	for _, o := range decodeAll(t, rbac) {
		must(admin.Create(ctx, o))
	}
	weftCfg := rest.CopyConfig(env.Config)
	weftCfg.Impersonate = rest.ImpersonationConfig{UserName: weftSAUser,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + issuerNS, "system:authenticated"}}
	weft, err := client.New(weftCfg, client.Options{Scheme: withCertManager(env.Scheme)})
	must(err)
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: kubernetes.NewForConfigOrDie(weftCfg).EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	t.Cleanup(broadcaster.Shutdown)

	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	run := func(name string, start func(context.Context) error) {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- start(runCtx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	loader := &identity.BundleLoader{Client: weft, Namespace: issuerNS, Log: log.WithName("trust"), Retry: 200 * time.Millisecond, Reload: time.Second}
	run("the bundle loader", loader.Start)
	must(testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if loader.Bundle() == nil {
			return errors.New("the trust bundle is not loaded")
		}
		return nil
	}))
	meshRoot := cmapiIssuer("mesh-root", cmapi.IssuerKind, "cert-manager.io")
	requester := &certmanager.Requester{Client: weft, Namespace: issuerNS, IssuerRef: meshRoot, Trust: loader.Bundle,
		Poll: 100 * time.Millisecond, Log: log.WithName("issuer")}
	leaves := &certmanager.Leaves{Sign: requester.Sign, Trust: loader.Bundle, TTL: time.Minute,
		Limiter: rate.NewLimiter(issuerQPS, issuerBurst), Timeout: 5 * time.Second, Log: log.WithName("leaves")}
	run("the leaves", leaves.Start)
	controllerID := identity.ID{TrustDomain: "cluster.local", Namespace: issuerNS, ServiceAccount: "weft-controller"}
	srv, err := server.New(server.Options{Address: "127.0.0.1:0", Log: log.WithName("xds"),
		// Pods through the admin client: the controller reads them from its
		// informers' cache (list and watch), which this test does not run.
		Auth:   &auth.Authenticator{Reviewer: auth.ClientReviewer{Client: weft}, Pods: admin},
		TLS:    identity.RequestedServerTLS(requester.Serving(controllerID, []string{issuerXDS}, identity.ServingTTL), time.Second, log.WithName("xds-tls")),
		Leaves: leaves, TrustDomain: "cluster.local", LeafTTL: time.Minute, EnvoyCerts: translate.EnvoyCertsSDS,
		Events: broadcaster.NewRecorder(env.Scheme, "weft-controller")})
	must(err)
	run("the xDS server", srv.Start)
	// The server sends nothing before its first model, as the controller's
	// watcher publishes once its caches have synced: an empty mesh here.
	srv.OnModel(ctx, mesh.Build(mesh.Input{}))
	addr, err := srv.Addr(ctx)
	must(err)
	// The sidecars' streams close before the server stops (cleanups run
	// last first): it waits for them.
	sideCtx, closeSidecars := context.WithCancel(ctx)
	t.Cleanup(closeSidecars)
	roots := x509.NewCertPool()
	roots.AddCert(cmRoot)
	side := &sidecars{t: t, ctx: sideCtx, c: admin, addr: addr, roots: roots, pods: map[string]*corev1.Pod{}}

	// Requests as the issuer sees them.
	seen := watchRequests(t, ctx, admin)

	t.Run("leaves from the issuer carry mutual TLS", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		side.pod(t, "a", "client")
		side.pod(t, "c", "server")
		certA, _ := side.open(t, "a").leaf(t, time.Minute)
		certC, _ := side.open(t, "c").leaf(t, time.Minute)
		for _, cert := range []tls.Certificate{certA, certC} {
			if err := cert.Leaf.CheckSignatureFrom(cmRoot); err != nil {
				t.Fatalf("a leaf for %v is not signed by cert-manager's issuer: %v", cert.Leaf.URIs, err)
			}
		}
		idA, err := identity.IDOf(certA.Leaf)
		must(err)
		idC, err := identity.IDOf(certC.Leaf)
		must(err)
		if idA.String() != "spiffe://cluster.local/ns/shop/sa/client" || idC.String() != "spiffe://cluster.local/ns/shop/sa/server" {
			t.Fatalf("the leaves are for %v and %v", idA, idC)
		}
		if err := identitytest.MutualTLS(certC, certA, idA, idC, roots); err != nil {
			t.Fatalf("mutual TLS between the issuer's leaves: %v", err)
		}
		// The xDS server's own certificate is the issuer's too.
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: issuerXDS, MinVersion: tls.VersionTLS12})
		must(err)
		served := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if err := served.CheckSignatureFrom(cmRoot); err != nil || len(served.URIs) != 1 || served.URIs[0].String() != controllerID.String() {
			t.Fatalf("the xDS server serves %v signed by %q (%v)", served.URIs, served.Issuer, err)
		}
		// Every finished request is deleted.
		must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			var list cmapi.CertificateRequestList
			if err := admin.List(ctx, &list, client.InNamespace(issuerNS), client.MatchingLabels{certmanager.ManagedByLabel: certmanager.ManagedBy}); err != nil {
				return err
			}
			if len(list.Items) > 0 {
				return fmt.Errorf("%d of weft's CertificateRequests are left", len(list.Items))
			}
			return nil
		}))
	})

	t.Run("200 pods cost one request per identity, within the rate", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		const pods, accounts = 200, 8
		var wg sync.WaitGroup
		for i := range accounts {
			must(admin.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("r%d", i)}}))
		}
		for i := range pods {
			wg.Go(func() { side.pod(t, fmt.Sprintf("p%03d", i), fmt.Sprintf("r%d", i%accounts)) })
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		start := time.Now()
		serials := make([]string, pods)
		streamCtx, closeStreams := context.WithCancel(ctx)
		defer closeStreams()
		for i := range pods {
			wg.Go(func() {
				s, err := side.openCtx(streamCtx, addr, fmt.Sprintf("p%03d", i))
				if err != nil {
					t.Error(err)
					return
				}
				cert, err := s.leafOrErr(2 * time.Minute)
				if err != nil {
					t.Errorf("pod p%03d: %v", i, err)
					return
				}
				if id, _ := identity.IDOf(cert.Leaf); id.ServiceAccount != fmt.Sprintf("r%d", i%accounts) {
					t.Errorf("pod p%03d got a leaf for %v", i, id)
				}
				serials[i] = cert.Leaf.SerialNumber.String()
			})
		}
		wg.Wait()
		took := time.Since(start)
		if t.Failed() {
			return
		}
		created := seen.since(start, func(id string) bool { return strings.HasPrefix(id, "spiffe://cluster.local/ns/shop/sa/r") })
		perID := map[string]int{}
		for _, r := range created {
			perID[r.id]++
		}
		for id, n := range perID {
			if n > 1 {
				t.Errorf("%d CertificateRequests for %s; its proxies share one leaf", n, id)
			}
		}
		if len(perID) != accounts {
			t.Errorf("requests for %d identities, want %d: %v", len(perID), accounts, perID)
		}
		if distinct := len(slices.Compact(slices.Sorted(slices.Values(serials)))); distinct != accounts {
			t.Errorf("%d pods were served %d distinct leaves, want one per ServiceAccount (%d)", pods, distinct, accounts)
		}
		// Rate: n requests span at least (n-burst)/qps, less the watch's
		// own jitter.
		for i := range created {
			for j := i + issuerBurst; j < len(created); j++ {
				least := time.Duration(float64(j-i+1-issuerBurst) / issuerQPS * float64(time.Second))
				if got := created[j].at.Sub(created[i].at); got < least-300*time.Millisecond {
					t.Errorf("requests %d to %d came within %v; the limit (%d/s after %d) allows no less than %v", i, j, got, issuerQPS, issuerBurst, least)
				}
			}
		}
		t.Logf("%d pods of %d ServiceAccounts were served in %v with %d CertificateRequests", pods, accounts, took.Round(time.Millisecond), len(created))
	})

	t.Run("an answer weft did not ask for is refused", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		rogueRef := cmapiIssuer("rogue", "RogueIssuer", "rogue.example.com")
		cmKey := secretKey(t, ctx, admin, issuerNS, "mesh-root")
		other, otherKey := selfSignedCA(t, "another root")
		var mode atomic.Value
		go rogueIssuer(ctx, t, admin, "rogue.example.com", func(csr *x509.CertificateRequest, asked time.Duration) (*x509.Certificate, crypto.Signer, *x509.Certificate) {
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now(), NotAfter: time.Now().Add(asked),
				URIs: csr.URIs, DNSNames: csr.DNSNames, KeyUsage: x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
			switch mode.Load() {
			case "extra SAN":
				tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"})
			case "longer lifetime":
				tmpl.NotAfter = tmpl.NotAfter.Add(time.Hour)
			case "another root":
				return tmpl, otherKey, other
			}
			return tmpl, cmKey, cmRoot
		})
		rogue := &certmanager.Requester{Client: weft, Namespace: issuerNS, IssuerRef: rogueRef, Trust: loader.Bundle,
			Poll: 100 * time.Millisecond, Log: log.WithName("rogue")}
		refusedBefore := requestCount(t, "refused")
		id := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
		for _, tc := range []struct{ mode, want string }{
			{"extra SAN", "names the URIs"},
			{"longer lifetime", "past the 1h0m0s asked for"},
			{"another root", "does not chain to the mesh's trust bundle"},
		} {
			mode.Store(tc.mode)
			key, err := identity.NewKey()
			must(err)
			_, err = rogue.Sign(ctx, certmanager.Request{ID: id, Key: key, Duration: time.Hour})
			if !errors.Is(err, certmanager.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("an answer with %s: %v, want it refused saying %q", tc.mode, err, tc.want)
			}
		}
		// What went wrong reaches the proxies that wait (the Event names
		// it) and the metrics.
		mode.Store("extra SAN")
		bad := &certmanager.Leaves{Sign: rogue.Sign, Trust: loader.Bundle, TTL: time.Hour, Log: log.WithName("rogue-leaves")}
		ended := make(chan struct{}, 10)
		bad.OnLeaves(func() { ended <- struct{}{} })
		run("the rogue leaves", bad.Start)
		must(testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
			_, err := bad.Leaf(id, time.Now())
			if err == nil {
				return errors.New("a leaf from the rogue issuer was served")
			}
			if !errors.Is(err, identity.ErrWaiting) || !strings.Contains(err.Error(), "refused the certificate") {
				return fmt.Errorf("the wait says %v", err)
			}
			return nil
		}))
		// The three answers above and at least one through Leaves.
		if got := requestCount(t, "refused") - refusedBefore; got < 4 {
			t.Errorf("weft_certificate_requests_total{outcome=refused} moved by %v, want 4 or more", got)
		}
		// The refused requests were deleted too.
		must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			var list cmapi.CertificateRequestList
			if err := admin.List(ctx, &list, client.InNamespace(issuerNS)); err != nil {
				return err
			}
			for _, cr := range list.Items {
				if cr.Spec.IssuerRef.Group == "rogue.example.com" {
					return fmt.Errorf("the refused request %s is left", cr.Name)
				}
			}
			return nil
		}))
	})

	t.Run("a stopped issuer: running workloads serve, new ones wait, both recover", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		side.pod(t, "x", "caller")
		side.pod(t, "y", "callee")
		sx, sy := side.open(t, "x"), side.open(t, "y")
		var certX, certY atomic.Pointer[tls.Certificate]
		first, _ := sx.leaf(t, time.Minute)
		certX.Store(&first)
		firstY, _ := sy.leaf(t, time.Minute)
		certY.Store(&firstY)
		var renewedX, renewedY atomic.Int32
		follow := func(s *sdsClient, into *atomic.Pointer[tls.Certificate], n *atomic.Int32) {
			for {
				cert, err := s.leafOrErr(3 * time.Minute)
				if err != nil {
					return
				}
				into.Store(&cert)
				n.Add(1)
			}
		}
		go follow(sx, &certX, &renewedX)
		go follow(sy, &certY, &renewedY)
		idX, _ := identity.IDOf(first.Leaf)
		idY, _ := identity.IDOf(firstY.Leaf)
		traffic := mtlsLoop(t, roots, certY.Load, certX.Load, idX, idY)

		failedBefore := requestCount(t, "failed")
		cm.stop(t)
		stopped := time.Now()
		// A new pod waits: nothing of its own, and an Event that says why.
		side.pod(t, "n", "newcomer")
		sn := side.open(t, "n")
		must(testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			return waitingEvent(ctx, admin, "n")
		}))
		// Past the running leaves' half-life, so their renewal fails too.
		renewAt := first.Leaf.NotBefore.Add(first.Leaf.NotAfter.Sub(first.Leaf.NotBefore) / 2)
		time.Sleep(time.Until(renewAt.Add(8 * time.Second)))
		if got := requestCount(t, "failed") - failedBefore; got < 2 {
			t.Errorf("weft_certificate_requests_total{outcome=failed} moved by %v during the outage, want the newcomer's and a renewal", got)
		}
		if renewedX.Load() != 0 || renewedY.Load() != 0 {
			t.Error("a running workload was sent a new leaf while the issuer was down")
		}
		if _, err := sn.leafOrErr(time.Second); err == nil {
			t.Fatal("a new pod was served a leaf while the issuer was down")
		}
		outage := time.Since(stopped)
		cm.start(t)
		// Both recover: the running ones renew before their leaves expire,
		// the newcomer is served.
		certN, err := sn.leafOrErr(2 * time.Minute)
		if err != nil {
			t.Fatalf("the newcomer after the issuer returned: %v", err)
		}
		if err := certN.Leaf.CheckSignatureFrom(cmRoot); err != nil {
			t.Fatal(err)
		}
		must(testenv.Eventually(ctx, time.Until(first.Leaf.NotAfter), func(context.Context) error {
			if renewedX.Load() == 0 || renewedY.Load() == 0 {
				return fmt.Errorf("renewed: x %d, y %d", renewedX.Load(), renewedY.Load())
			}
			return nil
		}))
		// Traffic goes on past the first leaves' expiry, on the renewed.
		time.Sleep(time.Until(first.Leaf.NotAfter.Add(3 * time.Second)))
		ok, failed, firstErr := traffic.stop()
		if failed > 0 || ok == 0 {
			t.Errorf("%d calls failed, %d succeeded (first error: %v)", failed, ok, firstErr)
		}
		t.Logf("issuer down %v (past half-life); running workloads: %d calls, %d failed; the newcomer was served after the issuer returned",
			outage.Round(time.Second), ok, failed)
	})

	t.Run("the controller binary with --ca=cert-manager", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		// What it keeps: the webhook configuration's caBundle, and the
		// bundle in a meshed namespace.
		const webhookConfig = "weft-injector-issuer-test"
		xdsPort, webhookPort := freePort(t), freePort(t)
		must(admin.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: webhookConfig},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: "inject.mesh.weft.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
				ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://127.0.0.1:%d/inject-pod", webhookPort))},
				// No namespace has this label: the API server never calls it here.
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"weft-test": "never"}},
				FailurePolicy:     ptr.To(admissionregistrationv1.Ignore),
			}},
		}))
		must(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
		stop := runWeftController(t, testenv.Binary(t, "weft"), filepath.Join(dir, "weft.log"), "--kubeconfig="+kubeconfig, "--mesh-namespace="+issuerNS,
			"--ca=cert-manager", "--issuer-name=mesh-root", "--issuer-kind=Issuer",
			fmt.Sprintf("--xds-bind-address=127.0.0.1:%d", xdsPort), "--xds-host="+issuerXDS, "--xds-status-bind-address=",
			fmt.Sprintf("--webhook-port=%d", webhookPort), "--webhook-configuration="+webhookConfig,
			"--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=console")
		// Stopped with a sidecar still connected: it must exit cleanly.
		defer stop(func(log []byte) {
			if !strings.Contains(string(log), "weft signs no pod certificates") {
				t.Error("the controller's log does not say it signs no pod certificates")
			}
		})
		// Both servers present the issuer's certificate for their names.
		for _, srv := range []struct {
			addr, name string
		}{{fmt.Sprintf("127.0.0.1:%d", xdsPort), issuerXDS}, {fmt.Sprintf("127.0.0.1:%d", webhookPort), "weft-controller.weft-system.svc"}} {
			must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", srv.addr,
					&tls.Config{RootCAs: roots, ServerName: srv.name, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
				if err != nil {
					return err
				}
				defer conn.Close()
				leaf := conn.ConnectionState().PeerCertificates[0]
				if err := leaf.CheckSignatureFrom(cmRoot); err != nil {
					return fmt.Errorf("%s serves a certificate the issuer did not sign: %w", srv.name, err)
				}
				return nil
			}))
		}
		must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			var wh admissionregistrationv1.MutatingWebhookConfiguration
			if err := admin.Get(ctx, client.ObjectKey{Name: webhookConfig}, &wh); err != nil {
				return err
			}
			if got := wh.Webhooks[0].ClientConfig.CABundle; string(got) != string(rootPEM) {
				return fmt.Errorf("the caBundle is %d bytes, not the trust bundle", len(got))
			}
			var cm corev1.ConfigMap
			if err := admin.Get(ctx, client.ObjectKey{Namespace: "meshed", Name: wire.BundleConfigMap}, &cm); err != nil {
				return err
			}
			if cm.Data[wire.BundleKey] != string(rootPEM) {
				return errors.New("the bundle published in a meshed namespace is not the trust bundle")
			}
			return nil
		}))
		// The trust state names the issuer and the bundle, and no CA of
		// weft's.
		sum := sha256.Sum256(cmRoot.Raw)
		must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			var mt meshv1.MeshTrust
			if err := admin.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, &mt); err != nil {
				return err
			}
			st := mt.Status
			if st.Source != "cert-manager" || st.Issuer != "Issuer/mesh-root" || st.SigningCA != nil || len(st.Anchors) != 1 ||
				st.Anchors[0].SHA256 != hex.EncodeToString(sum[:]) || !meta.IsStatusConditionTrue(st.Conditions, meshv1.ConditionReady) {
				return fmt.Errorf("the MeshTrust says %+v", st)
			}
			return nil
		}))
		// A sidecar of the controller's xDS server gets the issuer's leaf.
		side.pod(t, "m", "bin")
		sm, err := side.openCtx(sideCtx, fmt.Sprintf("127.0.0.1:%d", xdsPort), "m")
		must(err)
		cert, _ := sm.leaf(t, time.Minute)
		if err := cert.Leaf.CheckSignatureFrom(cmRoot); err != nil {
			t.Fatalf("the controller served a leaf the issuer did not sign: %v", err)
		}
		if id, _ := identity.IDOf(cert.Leaf); id.String() != "spiffe://cluster.local/ns/shop/sa/bin" {
			t.Fatalf("the controller served a leaf for %v", id)
		}
	})

	t.Run("weft holds no CA and used only its grants", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		var secrets corev1.SecretList
		must(admin.List(ctx, &secrets))
		for _, s := range secrets.Items {
			if s.Name == "weft-root-ca" {
				t.Errorf("the Secret %s/%s exists", s.Namespace, s.Name)
			}
		}
		if err := weft.Get(ctx, client.ObjectKey{Namespace: issuerNS, Name: "mesh-root"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("weft's ServiceAccount reading the issuer's Secret: %v, want Forbidden", err)
		}
		evs, err := testenv.ReadAudit(auditLog)
		must(err)
		used := map[string]int{}
		for _, ev := range evs {
			if ev.ImpersonatedUser == nil || ev.ImpersonatedUser.Username != weftSAUser || ev.ObjectRef == nil {
				continue
			}
			used[ev.Verb+" "+ev.ObjectRef.APIGroup+"/"+ev.ObjectRef.Resource+"/"+ev.ObjectRef.Subresource]++
		}
		for grant := range used {
			switch {
			case strings.Contains(grant, "/secrets/") && !strings.HasPrefix(grant, "get "):
				t.Errorf("weft did %s", grant)
			case strings.Contains(grant, "certificaterequests/status"), strings.Contains(grant, "signers"):
				t.Errorf("weft approved or signed: %s", grant)
			}
		}
		for _, want := range []string{"create cert-manager.io/certificaterequests/", "get cert-manager.io/certificaterequests/",
			"delete cert-manager.io/certificaterequests/", "get /configmaps/"} {
			if used[want] == 0 {
				t.Errorf("the audit log has no %q by weft: %v", want, used)
			}
		}
	})
}

func withCertManager(s *runtime.Scheme) *runtime.Scheme {
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}

func cmapiIssuer(name, kind, group string) cmmeta.IssuerReference {
	return cmmeta.IssuerReference{Name: name, Kind: kind, Group: group}
}

// helmTemplate renders templates of the chart with set.
func helmTemplate(t *testing.T, helm, root, dir, set string, templates ...string) []byte {
	t.Helper()
	args := []string{"template", "weft", filepath.Join(root, "charts", "weft"), "--namespace", issuerNS, "--set", set}
	for _, tpl := range templates {
		args = append(args, "--show-only", tpl)
	}
	cmd := exec.Command(helm, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir, "HELM_CACHE_HOME="+filepath.Join(dir, "helm"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "helm"), "HELM_DATA_HOME="+filepath.Join(dir, "helm"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	return out
}

// certManager is the harness, stopped and started by the test.
type certManager struct {
	harness, kubeconfig, logPath string
	mu                           sync.Mutex
	cmd                          *exec.Cmd
	exited                       chan error
	log                          *os.File
}

func runCertManager(t *testing.T, harness, kubeconfig, logPath string) *certManager {
	cm := &certManager{harness: harness, kubeconfig: kubeconfig, logPath: logPath}
	cm.start(t)
	t.Cleanup(func() {
		cm.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("cert-manager's log (the end):\n%s", b)
		}
	})
	return cm
}

func (cm *certManager) start(t *testing.T) {
	t.Helper()
	cm.mu.Lock()
	defer cm.mu.Unlock()
	f, err := os.OpenFile(cm.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cm.harness, "--kubeconfig", cm.kubeconfig, "--namespace", "cert-manager")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cm.cmd, cm.log, cm.exited = cmd, f, make(chan error, 1)
	go func(exited chan error) { exited <- cmd.Wait() }(cm.exited)
}

// stop ends the harness (SIGTERM; killed after 30 s).
func (cm *certManager) stop(t *testing.T) {
	t.Helper()
	cm.mu.Lock()
	defer cm.mu.Unlock()
	if cm.cmd == nil {
		return
	}
	_ = cm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-cm.exited:
		if err != nil {
			t.Errorf("cert-manager's controllers exited after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cm.cmd.Process.Kill()
		<-cm.exited //nolint:errcheck // killed: its exit status says nothing more
		t.Error("cert-manager's controllers did not stop within 30 s of SIGTERM")
	}
	_ = cm.log.Close()
	cm.cmd = nil
}

// sidecars makes pods and opens their SDS streams as weft's SDS client
// does (grpc-go has none): the pod's token, TLS to the xDS server checked
// against the mesh's roots, for the name serverName (issuerXDS when
// empty).
type sidecars struct {
	t          *testing.T
	ctx        context.Context
	c          client.Client
	addr       string
	roots      *x509.CertPool
	serverName string
	mu         sync.Mutex
	pods       map[string]*corev1.Pod
}

func (s *sidecars) pod(t *testing.T, name, sa string) {
	t.Helper()
	if err := s.c.Create(s.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Error(err)
		return
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.PodSpec{
		ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
		Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := s.c.Create(s.ctx, p); err != nil {
		t.Error(err)
		return
	}
	s.mu.Lock()
	s.pods[name] = p
	s.mu.Unlock()
}

type sdsClient struct {
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	got    chan *tls.Certificate
	err    chan error
}

func (s *sidecars) open(t *testing.T, pod string) *sdsClient {
	t.Helper()
	c, err := s.openCtx(s.ctx, s.addr, pod)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (s *sidecars) openCtx(ctx context.Context, addr, pod string) (*sdsClient, error) {
	s.mu.Lock()
	p := s.pods[pod]
	s.mu.Unlock()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{wire.TokenAudience}, ExpirationSeconds: ptr.To[int64](1200),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: p.UID}}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: p.Spec.ServiceAccountName}}
	if err := s.c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return nil, fmt.Errorf("a token for pod %s: %w", pod, err)
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.roots, ServerName: cmp.Or(s.serverName, issuerXDS), MinVersion: tls.VersionTLS12})),
		grpc.WithPerRPCCredentials(bearerToken(tr.Status.Token)))
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); cc.Close() }()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("pod %s's stream: %w", pod, err)
	}
	node := &corev3.Node{Id: pod + ".shop", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy))}}}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType}); err != nil {
		return nil, fmt.Errorf("pod %s's stream: %w", pod, err)
	}
	c := &sdsClient{stream: stream, got: make(chan *tls.Certificate, 16), err: make(chan error, 1)}
	go c.recv()
	return c, nil
}

// recv ACKs every response and hands on the certificates in it.
func (c *sdsClient) recv() {
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.err <- err
			return
		}
		for _, r := range resp.GetResources() {
			if r.GetName() != translate.SecretCertificate {
				continue
			}
			sec := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(sec); err != nil {
				c.err <- err
				return
			}
			tc := sec.GetTlsCertificate()
			cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
			if err == nil {
				cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
			}
			if err != nil {
				c.err <- err
				return
			}
			c.got <- &cert
		}
		if err := c.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			c.err <- err
			return
		}
	}
}

func (c *sdsClient) leafOrErr(within time.Duration) (tls.Certificate, error) {
	select {
	case cert := <-c.got:
		return *cert, nil
	case err := <-c.err:
		c.err <- err
		return tls.Certificate{}, err
	case <-time.After(within):
		return tls.Certificate{}, fmt.Errorf("no certificate within %v", within)
	}
}

func (c *sdsClient) leaf(t *testing.T, within time.Duration) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	cert, err := c.leafOrErr(within)
	if err != nil {
		t.Fatal(err)
	}
	return cert, cert.Leaf
}

type bearerToken string

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerToken) RequireTransportSecurity() bool { return true }

// requestLog is the CertificateRequests weft made, as a watch saw them
// come.
type requestLog struct {
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	id string
	at time.Time
}

func watchRequests(t *testing.T, ctx context.Context, c client.WithWatch) *requestLog {
	t.Helper()
	w, err := c.Watch(ctx, &cmapi.CertificateRequestList{}, client.InNamespace(issuerNS))
	if err != nil {
		t.Fatal(err)
	}
	l := &requestLog{}
	go func() {
		for ev := range w.ResultChan() {
			cr, ok := ev.Object.(*cmapi.CertificateRequest)
			if !ok || ev.Type != "ADDED" {
				continue
			}
			l.mu.Lock()
			l.seen = append(l.seen, seenRequest{id: cr.Annotations[certmanager.IdentityAnnotation], at: time.Now()})
			l.mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return l
}

func (l *requestLog) since(from time.Time, match func(id string) bool) []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []seenRequest
	for _, r := range l.seen {
		if !r.at.Before(from) && match(r.id) {
			out = append(out, r)
		}
	}
	return out
}

// requestCount reads weft_certificate_requests_total for an outcome from
// the registry the controller serves on /metrics.
func requestCount(t *testing.T, outcome string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "weft_certificate_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// waitingEvent finds the CertificateWaiting Event on a pod of shop.
func waitingEvent(ctx context.Context, c client.Client, pod string) error {
	var list eventsv1.EventList
	if err := c.List(ctx, &list, client.InNamespace("shop")); err != nil {
		return err
	}
	for _, ev := range list.Items {
		if ev.Regarding.Kind == "Pod" && ev.Regarding.Name == pod && ev.Reason == wire.EventCertificateWaiting &&
			ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Note, "waiting for a certificate") {
			return nil
		}
	}
	return fmt.Errorf("no %s Event on pod %s among %d", wire.EventCertificateWaiting, pod, len(list.Items))
}

func secretKey(t *testing.T, ctx context.Context, c client.Client, ns, name string) crypto.Signer {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(s.Data[corev1.TLSPrivateKeyKey])
	if block == nil {
		t.Fatalf("the Secret %s/%s holds no PEM key", ns, name)
	}
	var key any
	var err error
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	}
	if err != nil {
		t.Fatal(err)
	}
	return key.(crypto.Signer)
}

func selfSignedCA(t *testing.T, name string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// rogueIssuer answers the CertificateRequests of its group as a broken or
// hostile external issuer would: approved, Ready, with whatever sign makes
// of the CSR, signed by the key and certificate it returns.
func rogueIssuer(ctx context.Context, t *testing.T, c client.WithWatch, group string,
	sign func(csr *x509.CertificateRequest, asked time.Duration) (*x509.Certificate, crypto.Signer, *x509.Certificate)) {
	w, err := c.Watch(ctx, &cmapi.CertificateRequestList{}, client.InNamespace(issuerNS))
	if err != nil {
		t.Error(err)
		return
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		cr, ok := ev.Object.(*cmapi.CertificateRequest)
		if !ok || ev.Type != "ADDED" || cr.Spec.IssuerRef.Group != group {
			continue
		}
		block, _ := pem.Decode(cr.Spec.Request)
		if block == nil {
			continue
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			continue
		}
		tmpl, key, parent := sign(csr, cr.Spec.Duration.Duration)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, key)
		if err != nil {
			t.Error(err)
			continue
		}
		answer := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var cur cmapi.CertificateRequest
			if err := c.Get(ctx, client.ObjectKeyFromObject(cr), &cur); err != nil {
				return err
			}
			now := metav1.Now()
			cur.Status.Conditions = []cmapi.CertificateRequestCondition{
				{Type: cmapi.CertificateRequestConditionApproved, Status: cmmeta.ConditionTrue, Reason: "RogueApproved", LastTransitionTime: &now},
				{Type: cmapi.CertificateRequestConditionReady, Status: cmmeta.ConditionTrue, Reason: cmapi.CertificateRequestReasonIssued, LastTransitionTime: &now},
			}
			cur.Status.Certificate = answer
			return c.Status().Update(ctx, &cur)
		})
		if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			t.Errorf("the rogue issuer answering %s: %v", cr.Name, err)
		}
	}
}

// tlsLoop is one TLS 1.3 handshake and a few bytes per call, over
// loopback, between a server and a client whose certificates are read at
// each call (the newest their SDS stream brought).
type tlsLoop struct {
	ok, failed atomic.Int64
	firstErr   atomic.Pointer[error]
	done       chan struct{}
	stopped    chan struct{}
}

func mtlsLoop(t *testing.T, roots *x509.CertPool, server, client func() *tls.Certificate, clientID, serverID identity.ID) *tlsLoop {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &tlsLoop{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				s := tls.Server(conn, &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert,
					GetCertificate:        func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return server(), nil },
					VerifyPeerCertificate: peerIs(clientID, roots, x509.ExtKeyUsageClientAuth)})
				if s.Handshake() == nil {
					_, _ = s.Write([]byte("ok"))
				}
			}()
		}
	}()
	go func() {
		defer close(tr.stopped)
		defer lis.Close()
		// Bounded: at most 20 minutes of calls, one every 50 ms.
		deadline := time.Now().Add(20 * time.Minute)
		for time.Now().Before(deadline) {
			select {
			case <-tr.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			err := func() error {
				conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), &tls.Config{
					MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyPeerCertificate
					GetClientCertificate:  func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client(), nil },
					VerifyPeerCertificate: peerIs(serverID, roots, x509.ExtKeyUsageServerAuth)})
				if err != nil {
					return err
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				b, err := io.ReadAll(conn)
				if err == nil && string(b) != "ok" {
					err = fmt.Errorf("read %q", b)
				}
				return err
			}()
			if err != nil {
				tr.failed.Add(1)
				tr.firstErr.CompareAndSwap(nil, &err)
			} else {
				tr.ok.Add(1)
			}
		}
	}()
	return tr
}

func (tr *tlsLoop) stop() (ok, failed int64, firstErr error) {
	close(tr.done)
	<-tr.stopped
	if e := tr.firstErr.Load(); e != nil {
		firstErr = *e
	}
	return tr.ok.Load(), tr.failed.Load(), firstErr
}

// peerIs checks the peer's chain against roots, for usage, and that its
// one URI SAN is want.
func peerIs(want identity.ID, roots *x509.CertPool, usage x509.ExtKeyUsage) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no peer certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		links := x509.NewCertPool()
		for _, c := range certs[1:] {
			links.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: links, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		id, err := identity.IDOf(certs[0])
		if err != nil {
			return err
		}
		if id != want {
			return fmt.Errorf("the peer is %v, want %v", id, want)
		}
		return nil
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().(*net.TCPAddr).Port
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
