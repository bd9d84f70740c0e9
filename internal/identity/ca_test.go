package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustRoot(t *testing.T) *CA {
	t.Helper()
	ca, err := NewRoot("cluster.local", now, DefaultRootTTL)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func issue(t *testing.T, ca *CA, id ID, key *ecdsa.PrivateKey, ttl time.Duration) []*x509.Certificate {
	t.Helper()
	ders, err := ca.Issue(LeafRequest{ID: id, PublicKey: key.Public(), TTL: ttl}, now)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

var reviews = ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: "reviews"}

// A leaf names exactly its identity, chains to the root for client and
// server use, and lives the default lifetime; it renews at half-life.
func TestLeaf(t *testing.T) {
	ca := mustRoot(t)
	chain := issue(t, ca, reviews, newKey(t), 0)
	leaf := chain[0]
	id, err := IDOf(leaf)
	if err != nil || id != reviews {
		t.Fatalf("IDOf = %v, %v; want %v", id, err, reviews)
	}
	if got := leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/bookinfo/sa/reviews" {
		t.Errorf("URI SAN %s", got)
	}
	if leaf.IsCA || leaf.Subject.CommonName != "" {
		t.Errorf("leaf IsCA=%v subject %q", leaf.IsCA, leaf.Subject)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verifying for %v: %v", usage, err)
		}
	}
	if got := leaf.NotAfter.Sub(now); got != DefaultLeafTTL {
		t.Errorf("lifetime %v, want %v", got, DefaultLeafTTL)
	}
	if got := RenewAt(leaf); !got.Equal(now.Add(DefaultLeafTTL / 2)) {
		t.Errorf("renew at %v, want half way through the %v it was issued for", got, DefaultLeafTTL)
	}
}

// Lifetimes outside the bounds are refused, and no leaf outlives its CA.
func TestLeafLifetimeBounds(t *testing.T) {
	ca := mustRoot(t)
	for _, ttl := range []time.Duration{time.Second, MaxLeafTTL + time.Hour} {
		if _, err := ca.Issue(LeafRequest{ID: reviews, PublicKey: newKey(t).Public(), TTL: ttl}, now); err == nil {
			t.Errorf("a lifetime of %v was accepted", ttl)
		}
	}
	short, err := NewRoot("cluster.local", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := issue(t, short, reviews, newKey(t), 0)[0]
	if !leaf.NotAfter.Equal(short.Cert.NotAfter) {
		t.Errorf("a leaf of a CA expiring at %v expires at %v", short.Cert.NotAfter, leaf.NotAfter)
	}
	if _, err := short.Issue(LeafRequest{ID: reviews, PublicKey: newKey(t).Public()}, now.Add(2*time.Hour)); err == nil {
		t.Error("an expired CA issued a leaf")
	}
}

// Identities that are not weft's form, or not valid Kubernetes names, are
// refused, naming what is wrong.
func TestParseID(t *testing.T) {
	if id, err := ParseID("spiffe://cluster.local/ns/bookinfo/sa/reviews"); err != nil || id != reviews {
		t.Fatalf("ParseID = %v, %v", id, err)
	}
	for _, bad := range []string{
		"https://cluster.local/ns/bookinfo/sa/reviews",
		"spiffe://cluster.local/ns/bookinfo",
		"spiffe://cluster.local/ns/bookinfo/sa/reviews/extra",
		"spiffe://cluster.local/sa/reviews/ns/bookinfo",
		"spiffe://cluster.local/ns/Book_Info/sa/reviews",
		"spiffe://cluster.local:443/ns/bookinfo/sa/reviews",
		"spiffe://cluster.local/ns/bookinfo/sa/reviews?x=1",
	} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted it", bad)
		}
	}
	if _, err := mustRoot(t).Issue(LeafRequest{ID: ID{TrustDomain: "cluster.local", Namespace: "a/b", ServiceAccount: "x"}, PublicKey: newKey(t).Public()}, now); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Errorf("an invalid namespace: %v", err)
	}
}

// A certificate with more than one name is not a workload certificate.
func TestIDOfRefusesMoreThanOneName(t *testing.T) {
	leaf := issue(t, mustRoot(t), reviews, newKey(t), 0)[0]
	leaf.DNSNames = []string{"reviews.bookinfo.svc"}
	if _, err := IDOf(leaf); err == nil {
		t.Fatal("a leaf with a DNS name too was taken")
	}
}

// TestOneIssuer: workload leaves and serving certificates come out of the
// same signing step: back-dated by ClockSkew, never past the CA, no CA
// themselves, for digital signatures; only their names and uses differ.
func TestOneIssuer(t *testing.T) {
	ca, err := NewRoot("cluster.local", now, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	leaf, err := ca.Issue(LeafRequest{ID: reviews, PublicKey: key.Public(), TTL: MaxLeafTTL}, now)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.IssueServing([]string{"weft-controller.weft-system.svc"}, reviews, key.Public(), now.Add(36*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for name, ders := range map[string][][]byte{"leaf": leaf, "serving": serving} {
		c, err := x509.ParseCertificate(ders[0])
		if err != nil {
			t.Fatal(err)
		}
		if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature || len(c.URIs) != 1 || c.URIs[0].String() != reviews.String() {
			t.Errorf("%s: IsCA %v, key usage %v, URIs %v", name, c.IsCA, c.KeyUsage, c.URIs)
		}
		if !c.NotAfter.Equal(ca.Cert.NotAfter) {
			t.Errorf("%s lives until %v, past or short of the CA's %v", name, c.NotAfter, ca.Cert.NotAfter)
		}
		if len(ders) != 2 {
			t.Errorf("%s: a chain of %d, want the certificate and the root", name, len(ders))
		}
	}
	l, _ := x509.ParseCertificate(leaf[0])
	if !l.NotBefore.Equal(now.Add(-ClockSkew)) {
		t.Errorf("the leaf starts at %v, want %v (back-dated by ClockSkew)", l.NotBefore, now.Add(-ClockSkew))
	}
}
