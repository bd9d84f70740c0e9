package reliability

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/testenv/kubelet"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// callCredsEnv is what the injector sets in a proxyless pod's environment
// so that grpc-go sends the bootstrap's call credentials (the pod's
// token). grpc-go reads it once, when it starts: the tests that play
// proxyless pods in their own process set it before they re-run
// themselves in a network namespace (their child process inherits it),
// and check that the injector set it too.
const callCredsEnv = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"

// meshRig is a real API server and the controller binary as it runs in a
// cluster: the xDS server authenticating every stream with the pod's
// projected token over TLS from the mesh CA (--xds-auth=token), at
// localhost, and the injection webhook called by the API server. The test
// plays the kubelet: it asks for the pods' tokens and (with pod
// certificates) their certificates, and runs each pod's proxy with what
// the injector wrote into the pod.
type meshRig struct {
	t   *testing.T
	ctx context.Context
	env *testenv.Env
	c   client.Client
	dir string
	// args are every run's flags; the delivery and the leaf lifetime are
	// a run's own.
	args       []string
	xdsAddr    string
	statusAddr string
	proc       *testenv.Process
	node       *corev1.Node
	kl         *kubelet.Kubelet
}

// newMeshRig starts the API server, the mesh namespace and a node, and
// the webhook's configuration (its certificate from a CA of the test's
// own, for localhost).
func newMeshRig(ctx context.Context, t *testing.T) *meshRig {
	t.Helper()
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	r := &meshRig{t: t, ctx: ctx, env: env, c: env.Client, dir: t.TempDir()}
	r.must(r.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS}}))
	r.node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	r.must(r.c.Create(ctx, r.node))
	r.kl = &kubelet.Kubelet{Client: r.c, Node: r.node, Dir: filepath.Join(r.dir, "pods")}

	kubeconfig := filepath.Join(r.dir, "kubeconfig")
	r.must(env.Kubeconfig(kubeconfig))
	certDir := filepath.Join(r.dir, "webhook-certs")
	caPEM := webhookCerts(t, certDir)
	webhookPort := freePort(t)
	r.must(r.c.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "weft-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "inject.mesh.weft.dev", AdmissionReviewVersions: []string{"v1"}, SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy: ptr.To(admissionregistrationv1.Fail), TimeoutSeconds: ptr.To[int32](5),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(fmt.Sprintf("https://localhost:%d%s", webhookPort, inject.WebhookPath)), CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{wire.LabelInject: wire.InjectEnabled}},
		}}}))
	xdsPort := freePort(t)
	r.xdsAddr = "127.0.0.1:" + strconv.Itoa(xdsPort)
	r.statusAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	r.args = []string{"controller", "--kubeconfig=" + kubeconfig, "--mesh-namespace=" + meshNS,
		"--xds-bind-address=" + r.xdsAddr, "--xds-auth=token", "--xds-host=localhost", "--xds-port=" + strconv.Itoa(xdsPort),
		"--xds-status-bind-address=" + r.statusAddr,
		fmt.Sprintf("--webhook-port=%d", webhookPort), "--webhook-cert-dir=" + certDir, "--webhook-configuration=",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--log-format=json"}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "weft.log"))
			t.Logf("the controller's log (the end):\n%s", tail(b, 8000))
		}
	})
	return r
}

func (r *meshRig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

// start runs the controller with the rig's flags and args, and waits until
// its proxies' status answers.
func (r *meshRig) start(args ...string) {
	r.t.Helper()
	if r.proc != nil {
		r.t.Fatal("the controller runs already")
	}
	r.proc = testenv.StartProcess(r.t, filepath.Join(r.dir, "weft.log"), testenv.Binary(r.t, "weft"), append(slices.Clone(r.args), args...)...)
	if err := testenv.Eventually(r.ctx, 2*time.Minute, func(ctx context.Context) error { return synced(ctx, r.statusAddr, nil) }); err != nil {
		r.t.Fatalf("the controller does not serve: %v", err)
	}
}

// stop ends the controller as a rollout does (SIGTERM) and checks it ended
// cleanly.
func (r *meshRig) stop() {
	r.t.Helper()
	if err := r.proc.Stop(30 * time.Second); err != nil {
		r.t.Errorf("the controller did not stop cleanly: %v", err)
	}
	r.proc = nil
}

// meshNamespace creates a namespace whose pods the injector meshes, with
// its STRICT PeerAuthentication and, for each name, a Service and a
// MeshService of one gRPC port (9080) selecting app=<name>.
func (r *meshRig) meshNamespace(ns string, services ...string) {
	r.t.Helper()
	r.must(r.c.Create(r.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
	r.must(r.c.Create(r.ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}))
	for _, svc := range services {
		r.must(r.c.Create(r.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": svc},
			Ports:    []corev1.ServicePort{{Name: "grpc", Port: 9080, TargetPort: intstr.FromString("grpc")}},
		}}))
		r.must(r.c.Create(r.ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: meshv1.MeshServiceSpec{
			ServiceName: svc, Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolGRPC}}}}))
	}
	r.must(testenv.Eventually(r.ctx, time.Minute, func(ctx context.Context) error {
		return r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &corev1.ConfigMap{})
	}))
}

// pod is a meshed pod as the test's kubelet runs it.
type pod struct {
	pod *corev1.Pod
	// delivery is what the injector set the pod up for: pod certificates
	// when it gave the pod a podCertificate volume.
	delivery wire.CertDelivery
	// bootstrap is the injector's proxyless bootstrap with the pod's
	// files where the test keeps them; meta its node metadata, providers
	// the certificate providers it names.
	bootstrap []byte
	meta      map[string]string
	providers map[string]any
	// certs are its files (token, roots, and the pod certificate).
	certs xdstest.Certs
}

// id is the pod's SPIFFE ID.
func (p *pod) id() string {
	return wire.SPIFFEID("cluster.local", p.pod.Namespace, p.pod.Spec.ServiceAccountName)
}

// inject creates a proxyless gRPC pod (its own ServiceAccount) through the
// API server, which calls the injector, and gives it what a kubelet
// would: its token, the mesh roots, and, when the injector set it up for
// pod certificates, its certificate from weft's signer.
func (r *meshRig) inject(ns, name, app string) *pod {
	r.t.Helper()
	r.must(r.c.Create(r.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app},
		Annotations: map[string]string{inject.AnnotationProxy: string(wire.FlavourGRPC)}},
		Spec: corev1.PodSpec{NodeName: r.node.Name, ServiceAccountName: name, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	// The webhook fails closed: while the controller starts, creation is
	// refused.
	r.must(testenv.Eventually(r.ctx, time.Minute, func(ctx context.Context) error { return r.c.Create(ctx, p) }))
	out := &pod{pod: p, delivery: wire.DeliverySDS, certs: xdstest.Certs{Dir: filepath.Join(r.kl.Dir, name)}}
	for _, v := range p.Spec.Volumes {
		if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool { return s.PodCertificate != nil }) {
			out.delivery = wire.DeliveryPodCertificate
		}
	}
	env, err := kubelet.Env(p, p.Spec.Containers[0])
	r.must(err)
	var boot string
	for _, v := range env {
		switch name, value, _ := strings.Cut(v, "="); name {
		case "GRPC_XDS_BOOTSTRAP_CONFIG":
			boot = value
		case callCredsEnv:
			if value != "true" || os.Getenv(callCredsEnv) != "true" {
				r.t.Fatalf("%s=%q in the pod, %q in the test", callCredsEnv, value, os.Getenv(callCredsEnv))
			}
		}
	}
	if boot == "" {
		r.t.Fatalf("pod %s: the injector wrote no proxyless bootstrap: %v", name, env)
	}

	// The kubelet's part: the files the injector's volumes hold.
	if out.delivery == wire.DeliveryPodCertificate {
		_, err := r.kl.Certify(r.ctx, p)
		r.must(err)
	} else {
		r.must(os.MkdirAll(out.certs.Dir, 0o700))
		var bundle corev1.ConfigMap
		r.must(r.c.Get(r.ctx, client.ObjectKey{Namespace: ns, Name: wire.BundleConfigMap}, &bundle))
		r.must(os.WriteFile(out.certs.Roots(), []byte(bundle.Data[wire.BundleKey]), 0o600))
	}
	var sa corev1.ServiceAccount
	r.must(r.c.Get(r.ctx, client.ObjectKey{Namespace: ns, Name: name}, &sa))
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{wire.TokenAudience}, ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: p.UID}}}
	r.must(r.c.SubResource("token").Create(r.ctx, &sa, tr))
	token := filepath.Join(out.certs.Dir, wire.TokenFileName)
	r.must(os.WriteFile(token, []byte(tr.Status.Token), 0o600))

	// The bootstrap as the injector wrote it, its files where the test
	// keeps them instead of the pod's mounts.
	boot = strings.NewReplacer(wire.TokenFile, token, wire.RootsFile, out.certs.Roots(),
		wire.CertChainFile, out.certs.Chain(), wire.KeyFile, out.certs.Key()).Replace(boot)
	var parsed struct {
		Node struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"node"`
		Providers map[string]any `json:"certificate_providers"`
	}
	r.must(json.Unmarshal([]byte(boot), &parsed))
	out.bootstrap, out.meta, out.providers = []byte(boot), parsed.Node.Metadata, parsed.Providers
	return out
}

// serve runs the pod as a grpc-go xDS server on ip, published in an
// EndpointSlice of service, answering with its name.
func (r *meshRig) serve(p *pod, ip, service string) {
	r.t.Helper()
	lis, err := net.Listen("tcp", ip+":0")
	r.must(err)
	port := int32(lis.Addr().(*net.TCPAddr).Port)
	xdstest.StartXDSBackendFrom(r.t, lis, p.bootstrap, p.pod.Name, 0)
	r.must(r.c.Create(r.ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: p.pod.Namespace, Name: p.pod.Name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("grpc"), Port: ptr.To(port)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.pod.Namespace, Name: p.pod.Name}}},
	}))
}

// dial runs the pod as a grpc-go xDS client of target.
func (r *meshRig) dial(p *pod, target string) *xdstest.Client {
	r.t.Helper()
	return xdstest.NewClientFrom(r.t, p.bootstrap, target)
}

// fetchStatus asks a replica's proxy status listener (CSDS, plain text
// on loopback with --xds-auth=none) for every proxy's status.
func fetchStatus(ctx context.Context, addr string) (*statusv3.ClientStatusResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(callCtx, &statusv3.ClientStatusRequest{})
}

// nacks lists what the proxies the controller serves rejected, by their
// status (CSDS): "<node> <type>: <error>".
func nacks(ctx context.Context, statusAddr string) ([]string, error) {
	resp, err := fetchStatus(ctx, statusAddr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range resp.GetConfig() {
		for _, x := range c.GetGenericXdsConfigs() {
			if x.GetConfigStatus() == statusv3.ConfigStatus_ERROR || x.GetClientStatus() == adminv3.ClientResourceStatus_NACKED {
				out = append(out, fmt.Sprintf("%s %s: %s", c.GetNode().GetId(), x.GetTypeUrl(), x.GetErrorState().GetDetails()))
			}
		}
	}
	return out, nil
}

// rejections lists the Events weft recorded for rejected configuration
// (NACKs) in a namespace.
func (r *meshRig) rejections(ns string) []string {
	r.t.Helper()
	var evs eventsv1.EventList
	r.must(r.c.List(r.ctx, &evs, client.InNamespace(ns)))
	var out []string
	for _, e := range evs.Items {
		if e.Reason == wire.EventConfigurationRejected {
			out = append(out, e.Regarding.Name+": "+e.Note)
		}
	}
	return out
}

// caller makes calls through one client without pause, each at most every
// pace, and counts those that failed and those whose security was not
// the one wanted: mTLS between the caller's identity and its server's
// (caller set), or plain text (caller empty).
type caller struct {
	name                   string
	sent, failed, insecure atomic.Int64
	mu                     sync.Mutex
	first                  error
	stop                   func()
}

func startCaller(ctx context.Context, name string, cl *xdstest.Client, want string, pace, limit time.Duration) *caller {
	c := &caller{name: name}
	ctx, cancel := context.WithTimeout(ctx, limit)
	call := func(ctx context.Context) (xdstest.Answer, error) {
		callCtx, cancelCall := context.WithTimeout(ctx, 10*time.Second)
		defer cancelCall()
		return cl.Ask(callCtx)
	}
	wait := repeat(ctx, pace, call, func(a xdstest.Answer, err error) {
		c.sent.Add(1)
		switch {
		case err != nil:
			c.failed.Add(1)
			c.note(err)
		case a.Caller != want || (want != "" && a.Server == ""):
			c.insecure.Add(1)
			c.note(fmt.Errorf("a call answered by %s with the caller %q and the server %q, want the caller %q", a.Backend, a.Caller, a.Server, want))
		}
	})
	c.stop = func() {
		cancel()
		wait()
	}
	return c
}

func (c *caller) note(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == nil {
		c.first = err
	}
}

// check stops the calls and fails the test on any failed call or call of
// the wrong security.
func (c *caller) check(t *testing.T) {
	t.Helper()
	c.stop()
	sent, failed, insecure := c.sent.Load(), c.failed.Load(), c.insecure.Load()
	t.Logf("%s: %d calls, %d failed, %d of the wrong security", c.name, sent, failed, insecure)
	if sent == 0 {
		t.Errorf("%s: no call was made", c.name)
	}
	if failed+insecure > 0 {
		t.Errorf("%s: %d of %d calls failed and %d had the wrong security; the first: %v", c.name, failed, sent, insecure, c.first)
	}
}

// webhookCerts writes a serving certificate for localhost into dir
// (tls.crt, tls.key) from a CA of the test's own, and returns the CA's
// certificate (the webhook configuration's caBundle).
func webhookCerts(t *testing.T, dir string) []byte {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewRoot("cluster.local", time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.IssueServing([]string{"localhost"}, identity.ID{TrustDomain: "cluster.local", Namespace: meshNS, ServiceAccount: "weft-controller"},
		key.Public(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(os.WriteFile(filepath.Join(dir, "tls.crt"), identity.EncodeCerts(chain), 0o600),
		os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)); err != nil {
		t.Fatal(err)
	}
	return identity.EncodeCerts([][]byte{ca.Cert.Raw})
}

// syncedNode says whether the proxy node is connected to the controller
// whose status is at statusAddr and has acknowledged every type it was
// sent (a proxyless server asks only for its Listener and routes).
func syncedNode(ctx context.Context, statusAddr, node string) error {
	cc, err := grpc.NewClient(statusAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(callCtx, &statusv3.ClientStatusRequest{})
	if err != nil {
		return err
	}
	for _, c := range resp.GetConfig() {
		if c.GetNode().GetId() != node {
			continue
		}
		if len(c.GetGenericXdsConfigs()) == 0 {
			return fmt.Errorf("%s was sent nothing yet", node)
		}
		for _, x := range c.GetGenericXdsConfigs() {
			if x.GetConfigStatus() != statusv3.ConfigStatus_SYNCED {
				return fmt.Errorf("%s: %s is %s", node, x.GetTypeUrl(), x.GetConfigStatus())
			}
		}
		return nil
	}
	return fmt.Errorf("%s is not connected", node)
}
