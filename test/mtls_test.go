package test

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// editBackoff paces the retries of an edit that lost a race with weft's
// status writes.
var editBackoff = wait.Backoff{Steps: 10, Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Cap: 2 * time.Second}

// TestProxylessMTLSWithPodCertificates: weft signs the pods' certificate
// requests (the test plays the kubelet), and grpc-go xDS clients and
// servers that read those files, configured only by weft's xDS server,
// speak mTLS under a STRICT PeerAuthentication: each side sees the other's
// SPIFFE ID; a server whose certificate names another identity than its
// pod's is refused; a plain-text caller is refused; allow rules on the
// MeshService refuse a caller they do not name (PERMISSION_DENIED) and let
// in one they do, for its path and method; certificates renewed
// during continuous RPCs (connections recycled, so new handshakes use
// them) cost no request; PERMISSIVE turns the traffic back to plain text.
func TestProxylessMTLSWithPodCertificates(t *testing.T) {
	if !testenv.InOwnNetworkNamespace(t, "192.0.2.21", "192.0.2.22", "192.0.2.23") {
		return
	}
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}))

	// The controller as main.go wires it with pod certificates: the root
	// CA, the pod-certificate signer, the bundle publisher, the xDS server
	// with proxyless mTLS.
	log := zap.New(zap.UseDevMode(false))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	must(err)
	root := &identity.RootLoader{Client: c, Namespace: "weft-system", TrustDomain: "cluster.local", Log: logr.Discard()}
	must(mgr.Add(root))
	xs, err := server.New(server.Options{Address: "127.0.0.1:0", Log: log, Delivery: wire.DeliveryPodCertificate,
		PodCertificates: mgr.GetClient(), PodCertificateSigner: "weft.dev/workload"})
	must(err)
	must(mgr.Add(xs))
	must(controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: "weft-system", TrustDomain: "cluster.local",
		OnModel: xs.OnModel, Proxies: xs, Bundle: root.Bundle,
		PodCertificates: &controllers.PodCertificateSigner{SignerName: "weft.dev/workload", TrustDomain: "cluster.local", Root: root.Root}}))
	go func() { _ = mgr.Start(ctx) }()
	ads, err := xs.Addr(ctx)
	must(err)

	// The workloads: a client, reviews v1 and v2, and ratings, whose only
	// server presents the client's certificate instead of its own.
	ns := "shop"
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	must(c.Create(ctx, node))
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct{ name, sa, app, version string }{
		{"client", "client", "client", ""}, {"reviews-v1", "reviews-v1", "reviews", "v1"},
		{"reviews-v2", "reviews-v2", "reviews", "v2"}, {"ratings-0", "ratings", "ratings", ""},
	} {
		if err := c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.sa}}); err != nil {
			t.Fatal(err)
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: map[string]string{"app": p.app, "version": p.version}},
			Spec: corev1.PodSpec{NodeName: node.Name, ServiceAccountName: p.sa, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		must(c.Create(ctx, pod))
		pods[p.name] = pod
	}
	for _, svc := range []string{"reviews", "ratings"} {
		must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": svc},
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
		}}))
		ms := &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: meshv1.MeshServiceSpec{
			ServiceName: svc, Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}
		if svc == "reviews" {
			ms.Spec.Subsets = []meshv1.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
		}
		must(c.Create(ctx, ms))
	}
	pa := &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}
	must(c.Create(ctx, pa))

	// Certificates from weft, through PodCertificateRequests; the roots
	// from the bundle weft publishes into the namespace.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		return c.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &corev1.ConfigMap{})
	}))
	kl := &kubelet.Kubelet{Client: c, Node: node, Dir: t.TempDir()}
	certs := map[string]xdstest.Certs{}
	for name, pod := range pods {
		is, err := kl.Certify(ctx, pod)
		must(err)
		certs[name] = is.Certs
	}

	// The servers: grpc-go xDS servers on the pods' addresses, published
	// as EndpointSlices. Connections to reviews live 1 s, so that clients
	// handshake again with renewed certificates.
	serve := func(pod, ip, svc string, cs xdstest.Certs, maxAge time.Duration) string {
		t.Helper()
		lis, err := net.Listen("tcp", ip+":0")
		must(err)
		port := int32(lis.Addr().(*net.TCPAddr).Port)
		must(c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: pod, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}},
		}))
		xdstest.StartXDSBackend(t, lis, ads, pod+"."+ns, pod, cs, maxAge)
		return lis.Addr().String()
	}
	v1Addr := serve("reviews-v1", "192.0.2.21", "reviews", certs["reviews-v1"], time.Second)
	serve("reviews-v2", "192.0.2.22", "reviews", certs["reviews-v2"], time.Second)
	serve("ratings-0", "192.0.2.23", "ratings", certs["client"], 0)

	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	cl := xdstest.NewMTLSClient(t, ads, "client."+ns, "reviews.shop.svc.cluster.local:9080", certs["client"])
	var first xdstest.Answer
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		a, err := cl.Ask(callCtx, grpc.WaitForReady(true))
		if err != nil {
			return err
		}
		if a.Caller == "" || a.Server == "" {
			return fmt.Errorf("plain text: %+v", a)
		}
		first = a
		return nil
	}))
	if first.Caller != id("client") || (first.Server != id("reviews-v1") && first.Server != id("reviews-v2")) ||
		first.Server != id(first.Backend) {
		t.Errorf("mTLS between the wrong identities: %+v", first)
	}
	t.Logf("mTLS: %s → %s (%s)", first.Caller, first.Server, first.Backend)

	// The PeerAuthentication's Ready counts the proxies whose configuration
	// its mode shapes (every proxy that received a service it made STRICT)
	// and says they run its generation.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pa), pa); err != nil {
			return err
		}
		r := meta.FindStatusCondition(pa.Status.Conditions, meshv1.ConditionReady)
		if r == nil || r.Status != metav1.ConditionTrue || r.ObservedGeneration != pa.Generation ||
			!strings.HasPrefix(r.Message, "All ") || !strings.Contains(r.Message, fmt.Sprintf("acknowledged generation %d", pa.Generation)) {
			return fmt.Errorf("PeerAuthentication Ready: %+v", r)
		}
		return nil
	}))

	// weft status shows each proxy's identity and pod certificate.
	// (It reads the PodCertificateRequests from the manager's cache.)
	podCert := regexp.MustCompile(`client\.shop\s+grpc\s.*spiffe://cluster\.local/ns/shop/sa/client\s+podCertificate, expires \d{4}-`)
	if err := waitStatus(ctx, ads, podCert, "the client's pod certificate"); err != nil {
		t.Error(err)
	}

	// A server presenting another identity than its pod's: refused.
	impostor := xdstest.NewMTLSClient(t, ads, "client."+ns, "ratings.shop.svc.cluster.local:9080", certs["client"])
	callCtx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
	if a, err := impostor.Ask(callCtx, grpc.WaitForReady(true)); err == nil {
		t.Errorf("the client accepted a server with the wrong identity: %+v", a)
	}
	cancelCall()

	// A plain-text caller: refused by the STRICT server.
	plain, err := grpc.NewClient(v1Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer plain.Close()
	callCtx, cancelCall = context.WithTimeout(ctx, 3*time.Second)
	if err := plain.Invoke(callCtx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{}); err == nil {
		t.Error("a STRICT server answered a plain-text call")
	}
	cancelCall()

	// Who may call: allow rules on reviews, enforced by its servers on the
	// caller's certificate. Another service account only: the client is no
	// longer told of reviews (scoping), and a call it makes to a reviews pod
	// directly, with its certificate, is refused by the server's RBAC; the
	// client's own, for the method it calls: let through.
	// (Edits retry on a conflict: weft writes the objects' status between
	// the test's read and its write.)
	setAllow := func(rules []meshv1.AllowRule) {
		t.Helper()
		must(retry.RetryOnConflict(editBackoff, func() error {
			var ms meshv1.MeshService
			if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "reviews"}, &ms); err != nil {
				return err
			}
			ms.Spec.Allow = rules
			return c.Update(ctx, &ms)
		}))
	}
	setAllow([]meshv1.AllowRule{{From: []meshv1.Source{{Namespace: ns, ServiceAccount: "ratings"}}}})
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := cl.Ask(callCtx); err == nil || !strings.Contains(err.Error(), "ListenerResource") {
			return fmt.Errorf("a caller the allow rules do not name, through the mesh: %v, want no listener for reviews", err)
		}
		return nil
	}))
	direct := xdstest.DialDirect(t, v1Addr, certs["client"])
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if _, err := direct.Ask(callCtx); status.Code(err) != codes.PermissionDenied {
			return fmt.Errorf("a caller the allow rules do not name, directly: %v, want PERMISSION_DENIED", err)
		}
		return nil
	}))
	setAllow([]meshv1.AllowRule{{From: []meshv1.Source{{Namespace: ns, ServiceAccount: "client"}},
		Paths: []meshv1.PathMatch{{Type: meshv1.MatchPrefix, Value: "/weft.test.Reviews/"}}, Methods: []meshv1.HTTPMethod{"POST"}}})
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := cl.Ask(callCtx)
		return err
	}))

	// Renewals during continuous RPCs: three rounds of new certificates for
	// every workload; no RPC may fail, and the servers must see each of the
	// client's renewed certificates (each round waits for that).
	var (
		mu           sync.Mutex
		sent, failed int
		serials      = map[string]bool{}
		lastErr      error
	)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			// A slow call is not a failed one: the deadline only ends a hang.
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			a, err := cl.Ask(callCtx)
			cancel()
			mu.Lock()
			sent++
			if err != nil {
				failed++
				lastErr = err
			} else {
				serials[a.CallerSerial] = true
			}
			mu.Unlock()
		}
	}()
	stop := func() {
		close(done)
		<-stopped
	}
	var issued []string
	for range 3 {
		time.Sleep(time.Second) // calls on the current certificates first
		for _, name := range []string{"client", "reviews-v1", "reviews-v2"} {
			is, err := kl.Certify(ctx, pods[name])
			if err != nil {
				stop()
				t.Fatal(err)
			}
			if name == "client" {
				issued = append(issued, is.Serial)
			}
		}
		// The watcher reads the files within a second and connections live
		// a second; the bound only guards against a hang.
		last := issued[len(issued)-1]
		if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if !serials[last] {
				return fmt.Errorf("no server has seen the client's renewed certificate %s yet", last)
			}
			return nil
		}); err != nil {
			stop()
			t.Fatal(err)
		}
	}
	stop()
	t.Logf("renewals: %d RPCs, %d failed; the servers saw %d client certificates, all 3 renewed ones", sent, failed, len(serials))
	if failed > 0 {
		t.Errorf("%d of %d RPCs failed across certificate renewals (last: %v)", failed, sent, lastErr)
	}

	// PERMISSIVE: plain text again, both ways (allow rules name callers by
	// their certificates, so they go first).
	setAllow(nil)
	must(retry.RetryOnConflict(editBackoff, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pa), pa); err != nil {
			return err
		}
		pa.Spec.Mode = meshv1.MTLSPermissive
		return c.Update(ctx, pa)
	}))
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		a, err := cl.Ask(callCtx)
		if err != nil {
			return err
		}
		if a.Caller != "" || a.Server != "" {
			return fmt.Errorf("still TLS: %+v", a)
		}
		return nil
	}))
	// The servers answer plain text now (the client's call above was
	// served in plain text). A new connection per attempt: the one refused
	// under STRICT may be waiting out its reconnect backoff.
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		fresh, err := grpc.NewClient(v1Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer fresh.Close()
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return fresh.Invoke(callCtx, "/weft.test.Reviews/Get", &emptypb.Empty{}, &emptypb.Empty{}, grpc.WaitForReady(true))
	}); err != nil {
		t.Errorf("a PERMISSIVE server refuses plain text: %v", err)
	}
}
