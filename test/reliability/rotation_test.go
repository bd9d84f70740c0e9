package reliability

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestRootRotationUnderLoad: proxyless grpc-go workloads with pod
// certificates that weft signs call each other over mutual TLS (STRICT)
// without pause while the mesh's root is rotated (weft ca rotate, promote,
// retire). The test's kubelet renews certificates and refreshes the
// mounted bundle on its own schedule, as a node's would: a certificate
// renewed right after the rotation, before any peer's bundle was
// refreshed, must still verify. No call fails.
func TestRootRotationUnderLoad(t *testing.T) {
	const reviewsIP = "192.0.2.71"
	t.Parallel() // each in its own network namespace, with its own API server
	if !testenv.InOwnNetworkNamespace(t, reviewsIP) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{meshNS, appNS} {
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	must(c.Create(ctx, node))
	pods := map[string]*corev1.Pod{}
	for _, p := range []struct{ name, app string }{{"client", "client"}, {"reviews-v1", "reviews"}} {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: p.app}}))
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec: corev1.PodSpec{NodeName: node.Name, ServiceAccountName: p.app, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		must(c.Create(ctx, pod))
		pods[p.name] = pod
	}
	must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "reviews"},
		Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
	}}))
	must(c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "reviews"}, Spec: meshv1.MeshServiceSpec{
		ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}))
	must(c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}))

	// The controller binary signs the pods' certificates with its
	// built-in root.
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	weft := testenv.Binary(t, "weft")
	xdsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctl := testenv.StartProcess(t, filepath.Join(dir, "controller.log"), weft, "controller",
		"--kubeconfig="+kubeconfig, "--mesh-namespace="+meshNS, "--xds-bind-address="+xdsAddr, "--xds-auth=none",
		"--cert-delivery=podCertificate", "--webhook-port=0", "--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=json")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the controller's log (the end):\n%s", tail(ctl.Log(), 6000))
		}
	})
	bundleRoots := func(ctx context.Context) ([]*x509.Certificate, error) {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: appNS, Name: wire.BundleConfigMap}, &cm); err != nil {
			return nil, err
		}
		return identity.ParseCerts([]byte(cm.Data[wire.BundleKey]))
	}
	waitRoots := func(n int) {
		t.Helper()
		must(testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
			roots, err := bundleRoots(ctx)
			if err == nil && len(roots) != n {
				err = fmt.Errorf("the bundle in %s holds %d roots, want %d", appNS, len(roots), n)
			}
			return err
		}))
	}
	waitRoots(1)
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error { return synced(ctx, xdsAddr, nil) }))

	kl := &kubelet.Kubelet{Client: c, Node: node, Dir: t.TempDir()}
	certs := map[string]xdstest.Certs{}
	certify := func(name string) *x509.Certificate {
		t.Helper()
		is, err := kl.Certify(ctx, pods[name])
		must(err)
		certs[name] = is.Certs
		chain, err := identity.ParseCerts(mustRead(t, is.Certs.Chain()))
		must(err)
		return chain[0]
	}
	for name := range pods {
		certify(name)
	}
	// reviews serves on its pod's address; connections live 1 s, so that
	// the client handshakes again, with whatever certificates both hold
	// then, all through the test.
	lis, err := net.Listen("tcp", reviewsIP+":0")
	must(err)
	must(c.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: appNS, Name: "reviews-v1", Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(int32(lis.Addr().(*net.TCPAddr).Port))}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{reviewsIP}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: appNS, Name: "reviews-v1"}}},
	}))
	xdstest.StartXDSBackend(t, lis, xdsAddr, "reviews-v1."+appNS, "reviews-v1", certs["reviews-v1"], time.Second)
	cl := xdstest.NewMTLSClient(t, xdsAddr, "client."+appNS, target, certs["client"])
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		callCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		a, err := cl.Ask(callCtx, grpc.WaitForReady(true))
		if err == nil && (a.Caller == "" || a.Server == "") {
			err = fmt.Errorf("plain text: %+v", a)
		}
		return err
	}))

	l := startLoad(ctx, []*xdstest.Client{cl}, 10*time.Millisecond, 6*time.Minute)
	ca := func(step string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, weft, "ca", step, "--kubeconfig="+kubeconfig, "--mesh-namespace="+meshNS).CombinedOutput()
		if err != nil {
			t.Fatalf("weft ca %s: %v\n%s", step, err, out)
		}
		t.Logf("weft ca %s: %s", step, strings.TrimSpace(string(out)))
	}
	settle := func() { time.Sleep(5 * time.Second) } // file watchers read every second; connections live one
	oldRoot, err := bundleRoots(ctx)
	must(err)

	// 1. A new root, trusted beside the old. The client's kubelet renews
	// its certificate at once, before any bundle was refreshed anywhere:
	// the old root still signs, so reviews, which trusts only the old
	// root, still takes it.
	ca("rotate")
	waitRoots(2)
	if leaf := certify("client"); leaf.CheckSignatureFrom(oldRoot[0]) != nil {
		t.Errorf("a certificate renewed after the rotation is not the old root's: issued by %q", leaf.Issuer)
	}
	settle()
	for name := range pods {
		must(kl.RefreshRoots(ctx, pods[name]))
	}
	settle()

	// 2. The new root signs: each renewal from now on is its, and both
	// sides trust it.
	ca("promote")
	roots, err := bundleRoots(ctx)
	must(err)
	newRoot := roots[len(roots)-1]
	// The controller signs with it once the MeshTrust says so.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var mt meshv1.MeshTrust
		if err := c.Get(ctx, client.ObjectKey{Name: meshv1.MeshTrustName}, &mt); err != nil {
			return err
		}
		if mt.Status.Phase != meshv1.TrustSigningWithNew {
			return fmt.Errorf("the MeshTrust's phase is %q", mt.Status.Phase)
		}
		return nil
	}))
	if leaf := certify("reviews-v1"); leaf.CheckSignatureFrom(newRoot) != nil {
		t.Errorf("reviews' renewed certificate is issued by %q", leaf.Issuer)
	}
	settle()
	if leaf := certify("client"); leaf.CheckSignatureFrom(newRoot) != nil {
		t.Errorf("the client's renewed certificate is issued by %q", leaf.Issuer)
	}
	settle()

	// 3. The old root retired, once no certificate of its is in use.
	ca("retire")
	waitRoots(1)
	for name := range pods {
		must(kl.RefreshRoots(ctx, pods[name]))
	}
	settle()
	a, err := cl.Ask(ctx)
	must(err)
	l.check(t, "root rotated, promoted and retired")
	if a.Caller != "spiffe://cluster.local/ns/"+appNS+"/sa/client" || a.Server == "" {
		t.Errorf("after the rotation: %+v, want mutual TLS", a)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
