package identity_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/identity/identitytest"
)

// Two workloads complete a mutual TLS handshake over a real connection
// with leaves from the same root, each checking the other's SPIFFE ID; a
// peer with another identity is refused.
func TestMutualTLSWithSPIFFEIDs(t *testing.T) {
	ca, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	id := func(sa string) identity.ID {
		return identity.ID{TrustDomain: "cluster.local", Namespace: "bookinfo", ServiceAccount: sa}
	}
	pair := func(sa string) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ders, err := ca.Issue(identity.LeafRequest{ID: id(sa), PublicKey: key.Public()}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: ders, PrivateKey: key}
	}
	server, client := pair("reviews"), pair("ratings")
	if err := identitytest.MutualTLS(server, client, id("ratings"), id("reviews"), roots); err != nil {
		t.Fatalf("ratings → reviews: %v", err)
	}
	if err := identitytest.MutualTLS(server, client, id("productpage"), id("reviews"), roots); err == nil {
		t.Fatal("a server expecting productpage accepted ratings")
	}
	other, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign := x509.NewCertPool()
	foreign.AddCert(other.Cert)
	if err := identitytest.MutualTLS(server, client, id("ratings"), id("reviews"), foreign); err == nil {
		t.Fatal("peers whose certificates chain to another root were accepted")
	}
}
