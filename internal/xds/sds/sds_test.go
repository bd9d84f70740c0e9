package sds

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/identity"
)

func newRoot(t *testing.T, now time.Time) *identity.Root {
	t.Helper()
	ca, err := identity.NewRoot("cluster.local", now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Root{CA: ca, Bundle: identity.EncodeCerts([][]byte{ca.Cert.Raw})}
}

// leafOf reads the certificate out of a proxy's secrets.
func leafOf(t *testing.T, i *Issuer, proxy, ns, sa string, now time.Time) *x509.Certificate {
	t.Helper()
	secrets, err := i.Secrets(proxy, identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}, now)
	if err != nil {
		t.Fatalf("Secrets(%s): %v", proxy, err)
	}
	if len(secrets) != 2 {
		t.Fatalf("Secrets(%s) = %d secrets, want the certificate and the roots", proxy, len(secrets))
	}
	block, _ := pem.Decode(secrets[0].GetTlsCertificate().GetCertificateChain().GetInlineBytes())
	if block == nil {
		t.Fatalf("secret %q holds no PEM certificate", secrets[0].GetName())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestIssuerLifecycle(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	root := newRoot(t, now)
	current := root
	ttl := time.Hour
	i := New(CASource{Root: func() *identity.Root { return current }, TTL: ttl})

	first := leafOf(t, i, "p.ns", "ns", "sa", now)
	if len(first.URIs) != 1 || first.URIs[0].String() != "spiffe://cluster.local/ns/ns/sa/sa" {
		t.Fatalf("leaf URIs = %v, want exactly spiffe://cluster.local/ns/ns/sa/sa", first.URIs)
	}
	if got := first.NotAfter.Sub(now); got != ttl {
		t.Errorf("leaf lives %v from now, want %v", got, ttl)
	}
	if id, notAfter, ok := i.Leaf("p.ns"); !ok || id.ServiceAccount != "sa" || !notAfter.Equal(first.NotAfter) {
		t.Errorf("Leaf = %v, %v, %v; want sa's leaf until %v", id, notAfter, ok, first.NotAfter)
	}

	// Before half-life the same leaf is served and nothing is due.
	if again := leafOf(t, i, "p.ns", "ns", "sa", now.Add(10*time.Minute)); again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Error("a leaf was re-issued before half-life")
	}
	if i.Due("p.ns", now.Add(10*time.Minute)) {
		t.Error("Due before half-life")
	}
	// At half-life it is due, and replaced.
	half := now.Add(ttl / 2)
	if !i.Due("p.ns", half) {
		t.Error("not Due at half-life")
	}
	renewed := leafOf(t, i, "p.ns", "ns", "sa", half)
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("the leaf was not replaced at half-life")
	}

	// Another ServiceAccount proved on the same proxy: a new leaf for it.
	if other := leafOf(t, i, "p.ns", "ns", "other", half); other.URIs[0].String() != "spiffe://cluster.local/ns/ns/sa/other" {
		t.Errorf("leaf after the identity changed certifies %v", other.URIs)
	}

	// A rotated root makes every leaf due at once, and re-issues it under
	// the new CA.
	current = newRoot(t, now)
	if !i.Due("p.ns", half) {
		t.Error("not Due after the root rotated")
	}
	rotated := leafOf(t, i, "p.ns", "ns", "other", half)
	if err := rotated.CheckSignatureFrom(current.CA.Cert); err != nil {
		t.Errorf("the leaf after rotation is not signed by the new CA: %v", err)
	}

	// A forgotten proxy has no leaf and is never due.
	i.Forget("p.ns")
	if _, _, ok := i.Leaf("p.ns"); ok {
		t.Error("Leaf still known after Forget")
	}
	if i.Due("p.ns", half.Add(ttl)) {
		t.Error("a forgotten proxy is Due")
	}
}

func TestIssuerWithoutCA(t *testing.T) {
	i := New(CASource{Root: func() *identity.Root { return nil }, TTL: time.Hour})
	if _, err := i.Secrets("p.ns", identity.ID{TrustDomain: "cluster.local", Namespace: "ns", ServiceAccount: "sa"}, time.Now()); err == nil {
		t.Fatal("Secrets succeeded with no CA loaded")
	}
}

func TestRenewEvery(t *testing.T) {
	for _, c := range []struct{ ttl, want time.Duration }{
		{0, 10 * time.Second},
		{24 * time.Hour, 10 * time.Second},
		{time.Minute, 3 * time.Second},
		{10 * time.Second, time.Second},
	} {
		if got := RenewEvery(c.ttl); got != c.want {
			t.Errorf("RenewEvery(%v) = %v, want %v", c.ttl, got, c.want)
		}
	}
}
