package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/identity/identitytest"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// sdsStream is a sidecar's authenticated delta stream of secrets (weft's
// own client: grpc-go has no SDS).
type sdsStream struct {
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func openSDS(t *testing.T, f *authFixture, pod string, names ...string) *sdsStream {
	t.Helper()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(f.dial(t, f.token(t, pod, wire.TokenAudience))).DeltaAggregatedResources(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: pod + ".shop", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		wire.MetaFlavour: structpb.NewStringValue(string(wire.FlavourEnvoy))}}}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	return &sdsStream{stream: stream}
}

// next returns the secrets of the next response, by name, and ACKs it.
func (s *sdsStream) next(t *testing.T) map[string]*tlsv3.Secret {
	t.Helper()
	resp, err := s.stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*tlsv3.Secret{}
	for _, r := range resp.GetResources() {
		sec := &tlsv3.Secret{}
		if err := r.GetResource().UnmarshalTo(sec); err != nil {
			t.Fatal(err)
		}
		out[r.GetName()] = sec
	}
	if err := s.stream.Send(&discovery.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	return out
}

// certOf turns an SDS certificate secret into a TLS certificate, checking
// that the key is the certificate's.
func certOf(t *testing.T, sec *tlsv3.Secret) tls.Certificate {
	t.Helper()
	tc := sec.GetTlsCertificate()
	cert, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %s: %v", sec.Name, err)
	}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestSidecarsGetTheirOwnCertificate: a sidecar whose stream proved its pod
// is served, over SDS, a certificate for its ServiceAccount's SPIFFE ID
// (exactly one URI SAN, chaining to the roots it is also served) with a key
// made for it, and nothing of any other identity; two sidecars' certificates
// complete a mutual TLS handshake that checks each other's SPIFFE ID; a
// certificate of one minute is replaced at half-life on the open stream.
func TestSidecarsGetTheirOwnCertificate(t *testing.T) {
	f := newAuthFixture(t, map[string]string{"a": "client", "c": "other"}, func(s *Options, f *authFixture) {
		s.Signer, s.TrustDomain, s.LeafTTL = f.meshRoot, "cluster.local", identity.MinLeafTTL
		s.StatusAddress = "127.0.0.1:0"
	})
	a := openSDS(t, f, "a")
	got := a.next(t)
	if len(got) != 2 || got[translate.SecretCertificate] == nil || got[translate.SecretRoots] == nil {
		t.Fatalf("pod a was served %v, want its certificate and the roots", keys(got))
	}
	certA := certOf(t, got[translate.SecretCertificate])
	idA, err := identity.IDOf(certA.Leaf)
	if err != nil || idA.String() != "spiffe://cluster.local/ns/shop/sa/client" {
		t.Fatalf("a's certificate is for %v (%v)", idA, err)
	}
	bundle := got[translate.SecretRoots].GetValidationContext().GetTrustedCa().GetInlineBytes()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		t.Fatal("the roots secret holds no certificate")
	}
	if _, err := certA.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("a's certificate does not chain to the roots it was served: %v", err)
	}

	// Pod c asks, by name, for a's identity as well: it gets its own.
	c := openSDS(t, f, "c", translate.SecretCertificate, translate.SecretRoots, "spiffe://cluster.local/ns/shop/sa/client")
	gotC := c.next(t)
	if _, ok := gotC["spiffe://cluster.local/ns/shop/sa/client"]; ok || len(gotC) != 2 {
		t.Fatalf("pod c was served %v", keys(gotC))
	}
	certC := certOf(t, gotC[translate.SecretCertificate])
	if id, _ := identity.IDOf(certC.Leaf); id.ServiceAccount != "other" {
		t.Fatalf("c's certificate is for %v", id)
	}
	if bytes.Equal(gotC[translate.SecretCertificate].GetTlsCertificate().GetPrivateKey().GetInlineBytes(),
		got[translate.SecretCertificate].GetTlsCertificate().GetPrivateKey().GetInlineBytes()) {
		t.Fatal("two identities share a key")
	}
	idC, _ := identity.IDOf(certC.Leaf)
	if err := identitytest.MutualTLS(certA, certC, idC, idA, roots); err != nil {
		t.Fatalf("a and c: %v", err)
	}

	// weft status shows each sidecar's identity and its certificate.
	statusAddr, err := f.srv.StatusAddr(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := cli.Status(f.ctx, statusAddr, &out); err != nil {
		t.Fatal(err)
	}
	wantRow := regexp.MustCompile(`a\.shop\s+envoy.*spiffe://cluster\.local/ns/shop/sa/client\s+sds, expires ` + regexp.QuoteMeta(certA.Leaf.NotAfter.UTC().Format(time.RFC3339)))
	if !wantRow.MatchString(out.String()) {
		t.Errorf("weft status does not show a's identity and certificate:\n%s", out.String())
	}
	noKeyLeaves(t, statusAddr, "a.shop", got[translate.SecretCertificate], gotC[translate.SecretCertificate])

	// Renewed at half-life (30 s of 1 min), on the same stream.
	renewed := make(chan map[string]*tlsv3.Secret, 1)
	go func() { renewed <- a.next(t) }()
	select {
	case next := <-renewed:
		again := certOf(t, next[translate.SecretCertificate])
		if again.Leaf.SerialNumber.Cmp(certA.Leaf.SerialNumber) == 0 || !again.Leaf.NotBefore.After(certA.Leaf.NotBefore) {
			t.Fatal("the renewed certificate is the old one")
		}
		if id, _ := identity.IDOf(again.Leaf); id != idA {
			t.Fatalf("the renewed certificate is for %v", id)
		}
	case <-time.After(50 * time.Second):
		t.Fatal("a one-minute certificate was not renewed within 50 s")
	}

	// The root rotates: the sidecar gets a certificate from the new root
	// and a bundle holding both, at once.
	newRoot, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.rotated.Store(&identity.Root{CA: newRoot, Bundle: identity.EncodeCerts([][]byte{f.root.Cert.Raw, newRoot.Cert.Raw})})
	go func() { renewed <- a.next(t) }()
	select {
	case next := <-renewed:
		moved := certOf(t, next[translate.SecretCertificate])
		if err := moved.Leaf.CheckSignatureFrom(newRoot.Cert); err != nil {
			t.Fatalf("after the rotation the certificate is not the new root's: %v", err)
		}
		trusted, err := identity.ParseCerts(next[translate.SecretRoots].GetValidationContext().GetTrustedCa().GetInlineBytes())
		if err != nil || len(trusted) != 2 {
			t.Fatalf("after the rotation the bundle holds %d roots (%v), want both", len(trusted), err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a rotated root did not reach the sidecar within 20 s")
	}
}

// noKeyLeaves asks the client status for one sidecar's resources, as weft
// config does, and checks that its certificate is there and no key of
// the given secrets is, in any form.
func noKeyLeaves(t *testing.T, statusAddr, node string, secrets ...*tlsv3.Secret) {
	t.Helper()
	cc, err := grpc.NewClient(statusAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(context.Background(), &statusv3.ClientStatusRequest{
		NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: node}}}}})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	text := protojson.Format(resp)
	if len(resp.GetConfig()) != 1 || resp.GetConfig()[0].GetNode().GetId() != node {
		t.Fatalf("asked for %s, the client status lists %d proxies", node, len(resp.GetConfig()))
	}
	certs := 0
	for _, x := range resp.GetConfig()[0].GetGenericXdsConfigs() {
		if x.GetTypeUrl() != resource.SecretType || x.GetName() == "" {
			continue
		}
		sec := &tlsv3.Secret{}
		if err := x.GetXdsConfig().UnmarshalTo(sec); err != nil {
			t.Fatal(err)
		}
		if sec.GetTlsCertificate().GetPrivateKey() != nil {
			t.Errorf("secret %s is given with a private key", sec.GetName())
		}
		if bytes.Equal(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), secrets[0].GetTlsCertificate().GetCertificateChain().GetInlineBytes()) {
			certs++
		}
	}
	if certs != 1 {
		t.Errorf("the client status gives %s's certificate %d times, want once", node, certs)
	}
	for _, sec := range secrets {
		keyPEM := sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes()
		block, _ := pem.Decode(keyPEM)
		if block == nil {
			t.Fatalf("secret %s holds no PEM key", sec.GetName())
		}
		for _, leak := range [][]byte{keyPEM, block.Bytes, []byte(base64.StdEncoding.EncodeToString(block.Bytes))} {
			if bytes.Contains(raw, leak) || strings.Contains(text, string(leak)) {
				t.Fatalf("the client status of %s carries a private key", node)
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
