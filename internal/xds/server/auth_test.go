package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// countingReviewer counts the TokenReviews sent to the API server.
type countingReviewer struct {
	auth.Reviewer
	n atomic.Int64
}

func (c *countingReviewer) Review(ctx context.Context, token string, aud []string) (authenticationv1.TokenReviewStatus, error) {
	c.n.Add(1)
	return c.Reviewer.Review(ctx, token, aud)
}

// bearer sends a token on every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// TestStreamsProveTheirPod, against the real API server with tokens from
// its TokenRequest API and TLS from the mesh CA: a pod's token opens a
// stream for that pod's node id and nothing else; a token for another
// audience, no token, or the token of a deleted pod open nothing; a burst
// of reconnects costs one TokenReview.
// authFixture is an API server with namespace shop, pods (each with the
// ServiceAccount named for it) and their tokens, and an xDS server that
// authenticates them, with TLS from a fresh mesh root.
type authFixture struct {
	env     *testenv.Env
	ctx     context.Context
	c       client.Client
	pods    map[string]*corev1.Pod
	root    *identity.CA
	srv     *Server
	addr    string
	reviews *countingReviewer
	roots   *x509.CertPool
	// rotated, when set, is the mesh root after a rotation.
	rotated atomic.Pointer[identity.Root]
}

const authHost = "weft-controller.weft-system.svc"

func newAuthFixture(t *testing.T, podSA map[string]string, configure func(*Options, *authFixture)) *authFixture {
	t.Helper()
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	f := &authFixture{env: env, ctx: ctx, c: env.Client, pods: map[string]*corev1.Pod{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}))
	for name, sa := range podSA {
		if err := f.c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.PodSpec{
			ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
		must(f.c.Create(ctx, p))
		f.pods[name] = p
	}
	var err error
	f.root, err = identity.NewRoot("cluster.local", time.Now(), time.Hour)
	must(err)
	f.reviews = &countingReviewer{Reviewer: auth.ClientReviewer{Client: f.c}}
	o := Options{Address: "127.0.0.1:0", Log: logr.Discard(),
		Auth: &auth.Authenticator{Reviewer: f.reviews, Pods: f.c},
		TLS: identity.ServerTLS(f.meshRoot, []string{authHost},
			identity.ID{TrustDomain: "cluster.local", Namespace: "weft-system", ServiceAccount: "weft-controller"})}
	if configure != nil {
		configure(&o, f)
	}
	f.srv, err = New(o)
	must(err)
	go func() { _ = f.srv.Start(ctx) }()
	// The first model (an empty mesh): until one comes, proxies are sent
	// nothing.
	f.srv.OnModel(ctx, mesh.Build(mesh.Input{}))
	f.addr, err = f.srv.Addr(ctx)
	must(err)
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.root.Cert)
	return f
}

func (f *authFixture) meshRoot() *identity.Root {
	if r := f.rotated.Load(); r != nil {
		return r
	}
	return &identity.Root{CA: f.root, Bundle: identity.EncodeCerts(f.root.Chain)}
}

// token returns a pod's token for an audience.
func (f *authFixture) token(t *testing.T, pod, audience string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: f.pods[pod].Spec.ServiceAccountName}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: f.pods[pod].UID}}}
	if err := f.c.SubResource("token").Create(f.ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// forgeToken makes a bound token for pod as the API server makes them, with
// its signing key, expiring at exp.
func (f *authFixture) forgeToken(t *testing.T, pod string, exp time.Time) string {
	t.Helper()
	issuer, keyPEM, err := f.env.ServiceAccountIssuer()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatal("no PEM signing key")
	}
	var key *ecdsa.PrivateKey
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		key, _ = k.(*ecdsa.PrivateKey)
	}
	if key == nil {
		t.Fatal("the signing key is not ECDSA")
	}
	p := f.pods[pod]
	var sa corev1.ServiceAccount
	if err := f.c.Get(f.ctx, client.ObjectKey{Namespace: "shop", Name: p.Spec.ServiceAccountName}, &sa); err != nil {
		t.Fatal(err)
	}
	iat := exp.Add(-time.Hour)
	claims, _ := json.Marshal(map[string]any{
		"iss": issuer, "aud": []string{wire.TokenAudience}, "sub": "system:serviceaccount:shop:" + sa.Name,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(),
		"kubernetes.io": map[string]any{"namespace": "shop",
			"pod":            map[string]string{"name": pod, "uid": string(p.UID)},
			"serviceaccount": map[string]string{"name": sa.Name, "uid": string(sa.UID)}},
	})
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString([]byte(`{"alg":"ES256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	r, sig, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 64)
	r.FillBytes(raw[:32])
	sig.FillBytes(raw[32:])
	return signed + "." + enc.EncodeToString(raw)
}

// firstResponse sends a stream's first request and returns the first
// response, or the status that ended the stream. A server that refuses the
// stream may end it before the request is written; then Send reports
// io.EOF, and Recv the status (how quickly depends on the machine's load).
func firstResponse(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, req *discovery.DeltaDiscoveryRequest) (*discovery.DeltaDiscoveryResponse, error) {
	if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Recv()
}

// dial connects over TLS, sending tok (if any) on every call.
func (f *authFixture) dial(t *testing.T, tok string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: f.roots, ServerName: authHost, MinVersion: tls.VersionTLS12}))}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	cc, err := grpc.NewClient(f.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestStreamsProveTheirPod(t *testing.T) {
	f := newAuthFixture(t, map[string]string{"a": "client", "b": "client"}, func(s *Options, _ *authFixture) { s.StatusAddress = "127.0.0.1:0" })
	ctx, c, pods, srv, reviews := f.ctx, f.c, f.pods, f.srv, f.reviews
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	token := func(pod, audience string) string { return f.token(t, pod, audience) }
	dial := func(tok string) *grpc.ClientConn { return f.dial(t, tok) }
	// open starts a delta stream as node and returns its first response or
	// the error that ended it.
	open := func(tok, node string) (*discovery.DeltaDiscoveryResponse, error) {
		sctx, stop := context.WithTimeout(ctx, 10*time.Second)
		defer stop()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(dial(tok)).DeltaAggregatedResources(sctx)
		if err != nil {
			return nil, err
		}
		return firstResponse(stream, &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType})
	}

	tokA := token("a", wire.TokenAudience)
	if _, err := open(tokA, "a.shop"); err != nil {
		t.Fatalf("pod a's own stream: %v", err)
	}
	// A token made with the API server's own key, as it makes them: valid
	// while it lasts, refused once expired.
	if _, err := open(f.forgeToken(t, "a", time.Now().Add(10*time.Minute)), "a.shop"); err != nil {
		t.Fatalf("a token signed like the API server's, not expired: %v", err)
	}
	if _, err := open(f.forgeToken(t, "a", time.Now().Add(-time.Minute)), "a.shop"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("an expired token: %v", err)
	}
	for name, tc := range map[string]struct {
		token, node string
		code        codes.Code
	}{
		"a's token, b's node id": {tokA, "b.shop", codes.PermissionDenied},
		"another audience":       {token("a", "not-weft"), "a.shop", codes.Unauthenticated},
		"no token":               {"", "a.shop", codes.Unauthenticated},
		"not a token":            {"abc.def.ghi", "a.shop", codes.Unauthenticated},
	} {
		resp, err := open(tc.token, tc.node)
		if status.Code(err) != tc.code {
			t.Errorf("%s: got %v and %v, want %v", name, resp, err, tc.code)
		}
	}
	// The proxies' status is not served on the authenticated listener,
	// but on its own loopback one, and lists pod a.
	if _, err := statusv3.NewClientStatusDiscoveryServiceClient(dial(tokA)).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CSDS on the xDS listener: %v", err)
	}
	held, err := discovery.NewAggregatedDiscoveryServiceClient(dial(tokA)).DeltaAggregatedResources(ctx)
	must(err)
	must(held.Send(&discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "a.shop"}, TypeUrl: resource.ClusterType}))
	_, err = held.Recv()
	must(err)
	statusAddr, err := srv.StatusAddr(ctx)
	must(err)
	scc, err := grpc.NewClient(statusAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer scc.Close()
	st, err := statusv3.NewClientStatusDiscoveryServiceClient(scc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
	must(err)
	if len(st.GetConfig()) != 1 || st.GetConfig()[0].GetNode().GetId() != "a.shop" {
		t.Errorf("status lists %v, want pod a's proxy", st.GetConfig())
	}

	// Twenty reconnects with one token: one TokenReview, at most.
	tokB := token("b", wire.TokenAudience)
	before := reviews.n.Load()
	for range 20 {
		if _, err := open(tokB, "b.shop"); err != nil {
			t.Fatal(err)
		}
	}
	if got := reviews.n.Load() - before; got != 1 {
		t.Errorf("20 connects with one token cost %d TokenReviews", got)
	}

	// Pod b goes: its token, though remembered, opens nothing more.
	must(c.Delete(ctx, pods["b"], client.GracePeriodSeconds(0)))
	if err := testenv.Eventually(ctx, 10*time.Second, func(context.Context) error {
		if _, err := open(tokB, "b.shop"); status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("the deleted pod's token: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestClientCertificatesProveAServiceAccount: without a token, a client
// certificate from the mesh CA proves its ServiceAccount: the stream may
// use the node id of a pod of its namespace that runs as it, and no other;
// a certificate of another CA, or none, proves nothing. A stream so proved
// gets its identity's SDS certificate.
func TestClientCertificatesProveAServiceAccount(t *testing.T) {
	f := newAuthFixture(t, map[string]string{"a": "client", "c": "other"}, func(s *Options, f *authFixture) {
		s.Auth.Roots = func() *x509.CertPool {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(f.meshRoot().Bundle)
			return pool
		}
		s.Auth.TrustDomain = "cluster.local"
		s.Signer, s.TrustDomain = f.meshRoot, "cluster.local"
	})
	leaf := func(ca *identity.CA, sa string) tls.Certificate {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		chain, err := ca.Issue(identity.LeafRequest{ID: identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa},
			PublicKey: key.Public()}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: chain, PrivateKey: key}
	}
	open := func(cert *tls.Certificate, node string, typ string) (*discovery.DeltaDiscoveryResponse, error) {
		cfg := &tls.Config{RootCAs: f.roots, ServerName: authHost, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		cc, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		sctx, stop := context.WithTimeout(f.ctx, 10*time.Second)
		defer stop()
		stream, err := discovery.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(sctx)
		if err != nil {
			return nil, err
		}
		return firstResponse(stream, &discovery.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node, Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy))}}}, TypeUrl: typ})
	}
	client := leaf(f.root, "client")
	resp, err := open(&client, "a.shop", resource.SecretType)
	if err != nil {
		t.Fatalf("pod a's stream with its ServiceAccount's certificate: %v", err)
	}
	var names []string
	for _, r := range resp.GetResources() {
		names = append(names, r.GetName())
		if r.GetName() == translate.SecretCertificate {
			sec := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(sec); err != nil {
				t.Fatal(err)
			}
			c := certOf(t, sec)
			if id, _ := identity.IDOf(c.Leaf); id.ServiceAccount != "client" {
				t.Errorf("the stream got a certificate for %v", id)
			}
		}
	}
	if len(names) != 2 {
		t.Errorf("a certificate-authenticated sidecar got secrets %v", names)
	}
	other, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := leaf(other, "client")
	for name, tc := range map[string]struct {
		cert *tls.Certificate
		node string
		code codes.Code
	}{
		"a pod running as another ServiceAccount": {&client, "c.shop", codes.PermissionDenied},
		"another namespace":                       {&client, "a.elsewhere", codes.PermissionDenied},
		"a pod that does not exist":               {&client, "ghost.shop", codes.PermissionDenied},
		"a certificate of another CA":             {&foreign, "a.shop", codes.Unauthenticated},
		"no certificate and no token":             {nil, "a.shop", codes.Unauthenticated},
	} {
		if resp, err := open(tc.cert, tc.node, resource.ClusterType); status.Code(err) != tc.code {
			t.Errorf("%s: got %v and %v, want %v", name, resp, err, tc.code)
		}
	}
}
