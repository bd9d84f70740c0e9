package certmanager

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/identity"
)

// testCA is a CA that signs whatever template a test gives it, as a
// misbehaving issuer would.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T, name string, parent *testCA) *testCA {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pem() []byte { return identity.EncodeCerts([][]byte{ca.cert.Raw}) }

// leafTemplate is what a well-behaved issuer signs for req.
func leafTemplate(req Request, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		NotBefore:    now, NotAfter: now.Add(req.Duration),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:        []*url.URL{req.ID.URI()}, DNSNames: req.DNSNames,
		BasicConstraintsValid: true,
	}
}

func (ca *testCA) sign(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var workload = identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "cart"}

func TestCheckTakesAWellFormedAnswer(t *testing.T) {
	root := newTestCA(t, "root", nil)
	inter := newTestCA(t, "issuing", root)
	key, _ := identity.NewKey()
	now := time.Now()
	req := Request{ID: workload, Key: key, Duration: time.Hour}
	leaf := inter.sign(t, leafTemplate(req, now), key.Public())
	// The answer carries the intermediate and the root; only the root is
	// in the bundle, and it is not served.
	answer := identity.EncodeCerts([][]byte{leaf, inter.cert.Raw, root.cert.Raw})
	chain, err := Check(answer, req, now, now, root.pem())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || string(chain[0]) != string(leaf) || string(chain[1]) != string(inter.cert.Raw) {
		t.Fatalf("the chain served has %d certificates, want the leaf and the intermediate", len(chain))
	}
	// The intermediate alone as the anchor: the leaf alone is served.
	chain, err = Check(answer, req, now, now, inter.pem())
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 {
		t.Fatalf("the chain served to an intermediate anchor has %d certificates, want the leaf alone", len(chain))
	}
	// A serving certificate names its DNS names and needs server auth only.
	sreq := Request{ID: workload, DNSNames: []string{"weft.weft-system.svc", "localhost"}, Key: key, Duration: time.Hour}
	tmpl := leafTemplate(sreq, now)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = []string{"localhost", "weft.weft-system.svc"}
	if _, err := Check(identity.EncodeCerts([][]byte{root.sign(t, tmpl, key.Public())}), sreq, now, now, root.pem()); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRefusesWhatWasNotAskedFor(t *testing.T) {
	root := newTestCA(t, "root", nil)
	other := newTestCA(t, "other root", nil)
	key, _ := identity.NewKey()
	otherKey, _ := identity.NewKey()
	now := time.Now()
	req := Request{ID: workload, Key: key, Duration: time.Hour}
	for _, tc := range []struct {
		name   string
		change func(*x509.Certificate)
		pub    crypto.PublicKey
		signer *testCA
		want   string
	}{
		{name: "another key", pub: otherKey.Public(), want: "another key"},
		{name: "an extra URI", change: func(c *x509.Certificate) {
			c.URIs = append(c.URIs, &url.URL{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/kube-system/sa/admin"})
		}, want: "URIs"},
		{name: "another URI", change: func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/shop/sa/admin"}}
		}, want: "URIs"},
		{name: "a DNS name", change: func(c *x509.Certificate) { c.DNSNames = []string{"cart.shop.svc"} }, want: "DNS names"},
		{name: "an IP address", change: func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }, want: "IP addresses"},
		{name: "an email address", change: func(c *x509.Certificate) { c.EmailAddresses = []string{"a@b.c"} }, want: "email"},
		{name: "a CA", change: func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }, want: "is a CA"},
		{name: "a longer lifetime", change: func(c *x509.Certificate) { c.NotAfter = now.Add(time.Hour + 10*time.Minute) }, want: "past the 1h0m0s asked for"},
		{name: "a start in the future", change: func(c *x509.Certificate) { c.NotBefore = now.Add(10 * time.Minute) }, want: "valid only from"},
		{name: "an expired certificate", change: func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Minute)
		}, want: "expired"},
		{name: "no client authentication", change: func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}, want: "client authentication"},
		{name: "a chain to another root", signer: other, want: "does not chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := leafTemplate(req, now)
			if tc.change != nil {
				tc.change(tmpl)
			}
			pub, signer := tc.pub, tc.signer
			if pub == nil {
				pub = key.Public()
			}
			if signer == nil {
				signer = root
			}
			answer := identity.EncodeCerts([][]byte{signer.sign(t, tmpl, pub)})
			_, err := Check(answer, req, now, now, root.pem())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// The other root's certificate carried in the answer is only a link:
	// it does not make the chain trusted.
	tmpl := leafTemplate(req, now)
	answer := identity.EncodeCerts([][]byte{other.sign(t, tmpl, key.Public()), other.cert.Raw})
	if _, err := Check(answer, req, now, now, root.pem()); err == nil || !strings.Contains(err.Error(), "does not chain") {
		t.Fatalf("Check of a chain to a root carried in the answer = %v, want a refusal", err)
	}
	if _, err := Check([]byte("not PEM"), req, now, now, root.pem()); err == nil {
		t.Fatal("Check took an answer with no certificate")
	}
}
