package test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// tenancyHost is the xDS server's name in its certificate (--xds-host).
const tenancyHost = "weft-xds.weft-system.svc"

// tenancy is two tenants, shop and bank, on a real API server, with the
// controller binary serving xDS (tokens checked with TokenReviews, TLS
// from the mesh CA, sidecars' certificates over SDS) and its status.
// shop: web-0 (a caller) and reviews-0 (serves reviews, which only shop
// may call); bank: clerk-0 (a caller) and teller-0 (serves teller, which
// only bank may call; STRICT).
type tenancy struct {
	t      *testing.T
	ctx    context.Context
	env    *testenv.Env
	c      client.Client
	pods   map[string]*corev1.Pod // by "<pod>.<namespace>"
	roots  *x509.CertPool
	xds    string
	status string
	proc   *testenv.Process
}

var envoyMeta = &structpb.Struct{Fields: map[string]*structpb.Value{wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy))}}

func newTenancy(ctx context.Context, t *testing.T) *tenancy {
	t.Helper()
	env := testenv.ForTest(t)
	f := &tenancy{t: t, ctx: ctx, env: env, c: env.Client, pods: map[string]*corev1.Pod{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}))
	ip := 10
	for ns, svc := range map[string]string{"shop": "reviews", "bank": "teller"} {
		must(f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{wire.LabelInject: wire.InjectEnabled}}}))
		caller := map[string]string{"shop": "web", "bank": "clerk"}[ns]
		for _, name := range []string{caller, svc} {
			f.pod(ns, name, name)
		}
		must(f.c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": svc}, Ports: []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt32(9080)}}}}))
		ip++
		must(f.c.Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: svc, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](9080)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("192.0.2.%d", ip)}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: svc + "-0"}}},
		}))
		must(f.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc}, Spec: meshv1.MeshServiceSpec{
			ServiceName: svc, Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolHTTP}},
			Allow: []meshv1.AllowRule{{From: []meshv1.Source{{Namespace: ns}}}}}}))
	}
	must(f.c.Create(ctx, &meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "bank", Name: "default"},
		Spec: meshv1.PeerAuthenticationSpec{Mode: meshv1.MTLSStrict}}))

	kc, err := testenv.KubeconfigFor(env.Config)
	must(err)
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(os.WriteFile(kubeconfig, kc, 0o600))
	f.xds, f.status = "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	f.proc = testenv.StartProcess(t, filepath.Join(dir, "controller.log"), testenv.Binary(t, "weft"), "controller",
		"--kubeconfig="+kubeconfig, "--mesh-namespace=weft-system", "--webhook-port=0", "--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)), "--xds-bind-address="+f.xds,
		"--xds-status-bind-address="+f.status, "--xds-host="+tenancyHost, "--cert-delivery=sds", "--log-format=json")
	t.Cleanup(func() {
		if t.Failed() {
			log := f.proc.Log()
			t.Logf("the controller's log (the end):\n%s", log[max(0, len(log)-6000):])
		}
	})
	// The roots the mesh publishes into its namespaces.
	var cm corev1.ConfigMap
	must(testenv.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		return f.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: wire.BundleConfigMap}, &cm)
	}))
	f.roots = x509.NewCertPool()
	if !f.roots.AppendCertsFromPEM([]byte(cm.Data[wire.BundleKey])) {
		t.Fatalf("the bundle ConfigMap holds no roots: %v", cm.Data)
	}
	return f
}

func (f *tenancy) pod(ns, name, app string) *corev1.Pod {
	f.t.Helper()
	if err := f.c.Create(f.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app}}); client.IgnoreAlreadyExists(err) != nil {
		f.t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-0", Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{ServiceAccountName: app, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	if err := f.c.Create(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	f.pods[wire.NodeID(p.Name, ns)] = p
	return p
}

// token is a pod's projected token for an audience, from the API
// server's TokenRequest API.
func (f *tenancy) token(node, audience string) string {
	f.t.Helper()
	p := f.pods[node]
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Spec.ServiceAccountName}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
	if err := f.c.SubResource("token").Create(f.ctx, sa, tr); err != nil {
		f.t.Fatal(err)
	}
	return tr.Status.Token
}

// expiredToken is a pod's token as the API server made it an hour ago
// and a minute: signed with its key, expired.
func (f *tenancy) expiredToken(node string) string {
	f.t.Helper()
	p := f.pods[node]
	var sa corev1.ServiceAccount
	if err := f.c.Get(f.ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Spec.ServiceAccountName}, &sa); err != nil {
		f.t.Fatal(err)
	}
	tok, err := f.env.MintToken(testenv.BoundToken{Namespace: p.Namespace, ServiceAccount: sa.Name, ServiceAccountUID: string(sa.UID),
		Pod: p.Name, PodUID: string(p.UID), Audience: wire.TokenAudience, Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// dial connects to the xDS server over TLS (plain text when plain is
// set), sending tok on every call when it is not empty.
func (f *tenancy) dial(tok string, plain bool) *grpc.ClientConn {
	f.t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: f.roots, ServerName: tenancyHost, MinVersion: tls.VersionTLS12})
	if plain {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(tok)))
	}
	cc, err := grpc.NewClient(f.xds, opts...)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cc.Close() })
	return cc
}

// received is what a stream was sent before it ended.
type received struct {
	responses, resources int
	err                  error
}

// open tries one way in as node, and returns what came back before the
// stream ended, or, when served is set, its first response (a stream that
// is served stays open).
func (f *tenancy) open(cc *grpc.ClientConn, way, node string, served bool) received {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	n := &corev3.Node{Id: node, Metadata: envoyMeta}
	var out received
	recv := func(next func() (int, error)) received {
		for {
			k, err := next()
			if err != nil {
				out.err = err
				return out
			}
			out.responses++
			out.resources += k
			if served {
				return out
			}
		}
	}
	send := func(err error) bool { return err == nil || errors.Is(err, io.EOF) } // a refused stream may end before the request is written
	switch way {
	case "ADS":
		s, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			return received{err: err}
		}
		for _, typ := range []string{resource.ClusterType, resource.SecretType} {
			if err := s.Send(&discovery.DiscoveryRequest{Node: n, TypeUrl: typ}); !send(err) {
				return received{err: err}
			}
		}
		return recv(func() (int, error) { r, err := s.Recv(); return len(r.GetResources()), err })
	case "delta ADS":
		s, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
		if err != nil {
			return received{err: err}
		}
		if err := s.Send(&discovery.DeltaDiscoveryRequest{Node: n, TypeUrl: resource.SecretType,
			ResourceNamesSubscribe: []string{"default", "ROOTCA"}}); !send(err) {
			return received{err: err}
		}
		return recv(func() (int, error) { r, err := s.Recv(); return len(r.GetResources()), err })
	case "CDS":
		s, err := clusterservice.NewClusterDiscoveryServiceClient(cc).StreamClusters(ctx)
		if err != nil {
			return received{err: err}
		}
		if err := s.Send(&discovery.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); !send(err) {
			return received{err: err}
		}
		return recv(func() (int, error) { r, err := s.Recv(); return len(r.GetResources()), err })
	case "SDS":
		s, err := secretservice.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
		if err != nil {
			return received{err: err}
		}
		if err := s.Send(&discovery.DiscoveryRequest{Node: n, TypeUrl: resource.SecretType, ResourceNames: []string{"default"}}); !send(err) {
			return received{err: err}
		}
		return recv(func() (int, error) { r, err := s.Recv(); return len(r.GetResources()), err })
	case "CSDS":
		r, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
		if err != nil {
			return received{err: err}
		}
		return received{responses: 1, resources: len(r.GetConfig())}
	}
	f.t.Fatalf("no way in called %q", way)
	return received{}
}

// TestTenancy: what a proxy of one tenant can get from weft's xDS server,
// and what one tenant's objects can do to another's traffic, with the
// controller binary on a real API server (tokens from its TokenRequest
// API, reviewed with TokenReviews).
func TestTenancy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	f := newTenancy(ctx, t)
	web, clerk := "web-0.shop", "clerk-0.bank"
	webTok := f.token(web, wire.TokenAudience)

	// The control: a proxy's own token and node id are served.
	if err := testenv.Eventually(ctx, 2*time.Minute, func(context.Context) error {
		if got := f.open(f.dial(webTok, false), "ADS", web, true); got.err != nil || got.resources == 0 {
			return fmt.Errorf("web-0's own stream: %+v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("refused, and nothing sent", func(t *testing.T) {
		// A pod that is gone, and a pod whose name another took, each
		// with a token the API server made while it lived.
		gone := f.pod("shop", "gone", "web")
		goneTok := f.token(wire.NodeID(gone.Name, "shop"), wire.TokenAudience)
		again := f.pod("shop", "again", "web")
		againTok := f.token(wire.NodeID(again.Name, "shop"), wire.TokenAudience)
		// Each token opens its own stream once, so the refusal below is
		// not the API server's ruling remembered from a stream that was
		// served.
		for _, p := range []*corev1.Pod{gone, again} {
			if err := f.c.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
				t.Fatal(err)
			}
		}
		f.pod("shop", "again", "web")
		cases := []struct {
			name, token, node string
			plain             bool
			code              codes.Code
		}{
			{"no credentials", "", web, false, codes.Unauthenticated},
			{"plain text, with a valid token's pod id", "", web, true, codes.Unavailable},
			{"an expired token", f.expiredToken(web), web, false, codes.Unauthenticated},
			{"a token for another audience", f.token(web, "kubernetes"), web, false, codes.Unauthenticated},
			{"not a token", "abc.def.ghi", web, false, codes.Unauthenticated},
			{"another namespace's token", f.token(clerk, wire.TokenAudience), web, false, codes.PermissionDenied},
			{"a token of a pod that is gone", goneTok, wire.NodeID(gone.Name, "shop"), false, codes.Unauthenticated},
			{"a token of a pod whose name another pod took", againTok, wire.NodeID(again.Name, "shop"), false, codes.Unauthenticated},
			{"another pod's node id", webTok, "reviews-0.shop", false, codes.PermissionDenied},
			{"another namespace's node id", webTok, "teller-0.bank", false, codes.PermissionDenied},
		}
		for _, tc := range cases {
			for _, way := range []string{"ADS", "delta ADS", "CDS", "SDS", "CSDS"} {
				got := f.open(f.dial(tc.token, tc.plain), way, tc.node, false)
				want := tc.code
				if (way == "SDS" || way == "CSDS") && !tc.plain {
					// Not served on this listener at all: secrets come over
					// ADS only, the status on its loopback listener.
					want = codes.Unimplemented
				}
				if status.Code(got.err) != want || got.responses != 0 || got.resources != 0 {
					t.Errorf("%s, %s: %d responses, %d resources, %v; want none and %v", tc.name, way, got.responses, got.resources, got.err, want)
				}
			}
		}
	})

	// What a sidecar of shop is sent, whatever it asks for by name: its own
	// identity's secrets, and nothing of bank, which it may not call.
	t.Run("a proxy gets its own secrets and the services it may call", func(t *testing.T) {
		bank := [][]byte{[]byte("teller"), []byte(".bank"), []byte("/ns/bank/"), []byte("192.0.2.12")}
		tellerCluster, reviewsCluster := "outbound|9080||teller.bank.svc.cluster.local", "outbound|9080||reviews.shop.svc.cluster.local"
		cc := f.dial(webTok, false)
		s, err := discovery.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := &corev3.Node{Id: web, Metadata: envoyMeta}
		// Everything of each type, then by name: the other tenant's
		// cluster's endpoints and its identity's certificate.
		for _, req := range []*discovery.DiscoveryRequest{
			{Node: n, TypeUrl: resource.ListenerType}, {Node: n, TypeUrl: resource.ClusterType},
			{Node: n, TypeUrl: resource.RouteType}, {Node: n, TypeUrl: resource.EndpointType, ResourceNames: []string{reviewsCluster, tellerCluster}},
			{Node: n, TypeUrl: resource.SecretType, ResourceNames: []string{"default", "ROOTCA", "spiffe://cluster.local/ns/bank/sa/teller", "teller", "bank/teller", "*"}},
		} {
			if err := s.Send(req); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]*discovery.DiscoveryResponse{}
		for len(got) < 5 {
			r, err := s.Recv()
			if err != nil {
				t.Fatalf("after %d types: %v", len(got), err)
			}
			got[r.GetTypeUrl()] = r
		}
		var names []string
		for typ, r := range got {
			for _, a := range r.GetResources() {
				for _, b := range bank {
					if bytes.Contains(a.GetValue(), b) {
						t.Errorf("%s: a resource mentions %q", typ, b)
					}
				}
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Fatal(err)
				}
				name := resourceName(m)
				names = append(names, typ[strings.LastIndex(typ, ".")+1:]+"/"+name)
				if sec, ok := m.(*tlsv3.Secret); ok && sec.GetTlsCertificate() != nil {
					cert, err := tls.X509KeyPair(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes(),
						sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
					if err != nil {
						t.Fatal(err)
					}
					leaf, err := x509.ParseCertificate(cert.Certificate[0])
					if err != nil {
						t.Fatal(err)
					}
					if id, _ := identity.IDOf(leaf); id.String() != "spiffe://cluster.local/ns/shop/sa/web" {
						t.Errorf("web-0 was sent the certificate of %s", id)
					}
				}
			}
		}
		slices.Sort(names)
		t.Logf("web-0 was sent %d resources: %v", len(names), names)
		if !slices.Contains(names, "Secret/default") || !slices.Contains(names, "Secret/ROOTCA") || !slices.Contains(names, "ClusterLoadAssignment/"+reviewsCluster) {
			t.Errorf("web-0 was not sent its own certificate, roots and reviews' endpoints: %v", names)
		}
		if len(got[resource.SecretType].GetResources()) != 2 || len(got[resource.EndpointType].GetResources()) != 1 {
			t.Errorf("web-0 was sent more than it may have: %v", names)
		}
		// The control: bank's caller is sent teller.
		r := xdstest.NewRecorderConn(t, f.dial(f.token(clerk, wire.TokenAudience), false), clerk, envoyMeta, resource.ClusterType)
		if err := r.Wait(ctx, func(rcv, _ map[string]*discovery.DiscoveryResponse) bool {
			for _, a := range rcv[resource.ClusterType].GetResources() {
				if bytes.Contains(a.GetValue(), []byte(tellerCluster)) {
					return true
				}
			}
			return false
		}); err != nil {
			t.Errorf("clerk-0 was never sent teller's cluster: %v", err)
		}
	})

	t.Run("the status serves no key", func(t *testing.T) {
		// The status listener is plain text on loopback, for weft status
		// through kubectl port-forward: it names every proxy, and gives a
		// named proxy's resources as sent, its secrets' certificates only.
		cc, err := grpc.NewClient(f.status, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		// A sidecar connected, so that it holds a certificate.
		xdstest.NewRecorderConn(t, f.dial(webTok, false), web, envoyMeta, resource.SecretType)
		var resp *statusv3.ClientStatusResponse
		if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			resp, err = statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{
				NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{
					SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}}}})
			if err != nil {
				return err
			}
			for _, c := range resp.GetConfig() {
				for _, x := range c.GetGenericXdsConfigs() {
					if x.GetTypeUrl() == resource.SecretType && x.GetName() == "default" {
						return nil
					}
				}
			}
			return errors.New("no sidecar's certificate in the status yet")
		}); err != nil {
			t.Fatal(err)
		}
		raw, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte("PRIVATE KEY")) {
			t.Error("the status holds a private key")
		}
		for _, c := range resp.GetConfig() {
			for _, x := range c.GetGenericXdsConfigs() {
				if x.GetTypeUrl() != resource.SecretType || x.GetXdsConfig() == nil {
					continue // a type's summary, not a resource
				}
				sec := &tlsv3.Secret{}
				if err := x.GetXdsConfig().UnmarshalTo(sec); err != nil {
					t.Fatal(err)
				}
				if sec.GetTlsCertificate().GetPrivateKey() != nil {
					t.Errorf("%s's secret %s holds its key", c.GetNode().GetId(), sec.GetName())
				}
			}
		}
	})

	t.Run("one tenant's objects do not change another's traffic", func(t *testing.T) {
		// bank's caller of teller, and teller's own proxy, as they are.
		all := []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType}
		watchers := map[string]*xdstest.Recorder{}
		for _, node := range []string{clerk, "teller-0.bank"} {
			watchers[node] = xdstest.NewRecorderConn(t, f.dial(f.token(node, wire.TokenAudience), false), node, envoyMeta, all...)
		}
		before := map[string]map[string]*discovery.DiscoveryResponse{}
		for node, r := range watchers {
			if err := r.Wait(ctx, func(_, acked map[string]*discovery.DiscoveryResponse) bool { return len(acked) == len(all) }); err != nil {
				t.Fatalf("%s: %v", node, err)
			}
			_, before[node] = r.Responses()
		}
		// What shop may write, aimed at bank's teller.
		tp := func(name string, spec meshv1.TrafficPolicySpec) *meshv1.TrafficPolicy {
			return &meshv1.TrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: spec}
		}
		everything := meshv1.TrafficPolicySpec{HTTP: []meshv1.HTTPRoute{{Backends: []meshv1.WeightedBackend{{Weight: 100}},
			Fault: &meshv1.FaultInjection{Abort: &meshv1.FaultAbort{HTTPStatus: ptr.To[int32](503), Percentage: 100}}}}}
		aimed := []struct {
			obj   client.Object
			field string
		}{
			{tp("teller", withTarget(everything, "teller")), "spec.targetRef.name"},
			{tp("teller-bank", withTarget(everything, "teller.bank")), "spec.targetRef.name"},
			{tp("teller-bank-svc", withTarget(everything, "teller.bank.svc.cluster.local")), "spec.targetRef.name"},
			{tp("mirror", meshv1.TrafficPolicySpec{TargetRef: meshv1.TargetRef{Name: "reviews"}, HTTP: []meshv1.HTTPRoute{{
				Backends: []meshv1.WeightedBackend{{Weight: 100}}, Mirror: &meshv1.Mirror{Name: "teller.bank"}}}}), "spec.http[0].mirror.name"},
			// A MeshService of shop for a Service shop lacks, and one named
			// like bank's, on shop's reviews.
			{&meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "teller"}, Spec: meshv1.MeshServiceSpec{
				ServiceName: "teller", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolHTTP}}}}, "spec.serviceName"},
			{&meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "teller.bank"}, Spec: meshv1.MeshServiceSpec{
				ServiceName: "reviews", Ports: []meshv1.MeshServicePort{{Port: 9080, Protocol: meshv1.ProtocolHTTP}}}}, "spec.serviceName"},
			// A PeerAuthentication of shop selecting teller's labels.
			{&meshv1.PeerAuthentication{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "teller"}, Spec: meshv1.PeerAuthenticationSpec{
				Selector: &meshv1.WorkloadSelector{MatchLabels: map[string]string{"app": "teller"}}, Mode: meshv1.MTLSDisable}}, ""},
		}
		for _, a := range aimed {
			if err := f.c.Create(ctx, a.obj); err != nil {
				t.Fatalf("%T %s: %v", a.obj, a.obj.GetName(), err)
			}
		}
		// Admission refuses what names another namespace's Service.
		err := f.c.Create(ctx, &meshv1.MeshService{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bank-teller"}, Spec: meshv1.MeshServiceSpec{
			ServiceName: "teller.bank", Ports: []meshv1.MeshServicePort{{Port: 9080}}}})
		if err == nil || !strings.Contains(err.Error(), "spec.serviceName") {
			t.Errorf("a MeshService naming Service teller.bank: %v", err)
		}
		// Each is judged, naming the field; the PeerAuthentication covers
		// no pod of shop.
		for _, a := range aimed {
			if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
				return tenancyVerdict(ctx, f.c, a.obj, a.field)
			}); err != nil {
				t.Errorf("%T %s: %v", a.obj, a.obj.GetName(), err)
			}
		}
		// A change that does reach shop's proxies, after all of the above:
		// once web-0 has it, the server has served every model that held
		// them.
		webRec := xdstest.NewRecorderConn(t, f.dial(webTok, false), web, envoyMeta, resource.ClusterType)
		reviews := &meshv1.MeshService{}
		if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := f.c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: "reviews"}, reviews); err != nil {
				return err
			}
			reviews.Spec.Subsets = []meshv1.Subset{{Name: "v1", Labels: map[string]string{"app": "reviews"}}}
			return f.c.Update(ctx, reviews)
		}); err != nil {
			t.Fatal(err)
		}
		waitCtx, cancelWait := context.WithTimeout(ctx, time.Minute)
		defer cancelWait()
		if err := webRec.Wait(waitCtx, func(_, acked map[string]*discovery.DiscoveryResponse) bool {
			for _, a := range acked[resource.ClusterType].GetResources() {
				if bytes.Contains(a.GetValue(), []byte("outbound|9080|v1|reviews.shop.svc.cluster.local")) {
					return true
				}
			}
			return false
		}); err != nil {
			t.Fatalf("shop's own change never reached web-0: %v", err)
		}
		for node, r := range watchers {
			received, _ := r.Responses()
			for _, typ := range all {
				b, a := before[node][typ], received[typ]
				if a.GetVersionInfo() != b.GetVersionInfo() || !proto.Equal(a, b) {
					t.Errorf("%s: %s changed (version %s to %s)", node, typ, b.GetVersionInfo(), a.GetVersionInfo())
				}
			}
		}
	})

	t.Run("the unauthenticated status stays on loopback", func(t *testing.T) {
		kc, err := testenv.KubeconfigFor(f.env.Config)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		kubeconfig := filepath.Join(dir, "kubeconfig")
		if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, addr := range []string{"0.0.0.0:" + strconv.Itoa(freePort(t)), ":" + strconv.Itoa(freePort(t))} {
			p := testenv.StartProcess(t, filepath.Join(dir, "controller.log"), testenv.Binary(t, "weft"), "controller",
				"--kubeconfig="+kubeconfig, "--mesh-namespace=weft-system", "--webhook-port=0", "--metrics-bind-address=0",
				"--health-probe-bind-address=0", "--xds-bind-address=127.0.0.1:0", "--xds-status-bind-address="+addr,
				"--xds-host="+tenancyHost, "--log-format=json")
			if err := testenv.Eventually(context.Background(), time.Minute, func(context.Context) error {
				if ended, _ := p.Exited(); !ended {
					return errors.New("still running")
				}
				return nil
			}); err != nil {
				t.Errorf("--xds-status-bind-address=%s: the controller serves: %v", addr, err)
			}
			if !bytes.Contains(p.Log(), []byte("--xds-status-bind-address: \\\""+addr+"\\\" is not a loopback address")) &&
				!bytes.Contains(p.Log(), []byte("--xds-status-bind-address: \""+addr+"\" is not a loopback address")) {
				t.Errorf("--xds-status-bind-address=%s: the controller did not say why it stopped:\n%s", addr, p.Log())
			}
		}
	})
}

func withTarget(spec meshv1.TrafficPolicySpec, name string) meshv1.TrafficPolicySpec {
	spec.TargetRef = meshv1.TargetRef{Name: name}
	return spec
}

// tenancyVerdict says whether o's current generation is refused with a
// condition naming field (Accepted or ResolvedRefs False), or, for field
// "", whether it is accepted covering no pod.
func tenancyVerdict(ctx context.Context, c client.Client, o client.Object, field string) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
		return err
	}
	var conds []metav1.Condition
	switch o := o.(type) {
	case *meshv1.TrafficPolicy:
		conds = o.Status.Conditions
	case *meshv1.MeshService:
		conds = o.Status.Conditions
	case *meshv1.PeerAuthentication:
		if o.Status.Workloads != 0 {
			return fmt.Errorf("covers %d pods", o.Status.Workloads)
		}
		conds = o.Status.Conditions
	}
	for _, typ := range []string{meshv1.ConditionAccepted, meshv1.ConditionResolvedRefs} {
		c := meta.FindStatusCondition(conds, typ)
		if c == nil || c.ObservedGeneration != o.GetGeneration() {
			return fmt.Errorf("%s not judged yet: %+v", typ, c)
		}
		if field != "" && c.Status == metav1.ConditionFalse {
			if !strings.Contains(c.Message, field) {
				return fmt.Errorf("%s False without naming %s: %s", typ, field, c.Message)
			}
			return nil
		}
	}
	if field != "" {
		return fmt.Errorf("accepted and resolved: %+v", conds)
	}
	return nil
}

// resourceName is an xDS resource's name.
func resourceName(m proto.Message) string {
	switch r := m.(type) {
	case *listenerv3.Listener:
		return r.GetName()
	case *clusterv3.Cluster:
		return r.GetName()
	case *endpointv3.ClusterLoadAssignment:
		return r.GetClusterName()
	case *tlsv3.Secret:
		return r.GetName()
	case interface{ GetName() string }:
		return r.GetName()
	}
	return "?"
}
