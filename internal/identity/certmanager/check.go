// Package certmanager has workload and serving certificates signed by a
// cert-manager issuer weft does not hold (--ca=cert-manager): Vault, a
// cloud CA, an ACME CA, or cert-manager's CA issuer. weft makes each key in
// memory, asks for its certificate with a CertificateRequest carrying a CSR
// that names only the SPIFFE URI (and, for the controller's own servers,
// their DNS names), checks what comes back against the mesh's trust bundle
// before anything is served with it, and deletes the request. Leaves is the
// sidecars' source of leaves: one shared leaf per identity, requests
// coalesced and rate limited, the last good leaf served through an outage
// of the issuer until it expires.
package certmanager

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/weftmesh/weft/internal/identity"
)

// Request is what weft asks an issuer to sign.
type Request struct {
	// ID is the one URI SAN.
	ID identity.ID
	// DNSNames are asked for serving certificates only (the webhook and
	// the xDS server); a workload leaf names no DNS name.
	DNSNames []string
	// Key is the key the certificate is for; it stays in memory.
	Key crypto.Signer
	// Duration is the lifetime asked for.
	Duration time.Duration
}

// serving says the request is for one of the controller's servers.
func (r Request) serving() bool { return len(r.DNSNames) > 0 }

// usages are the extended key usages the certificate must allow: a
// sidecar's leaf both calls and serves; a controller server only serves.
func (r Request) usages() []x509.ExtKeyUsage {
	if r.serving() {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
}

// Slack is how far an answer's lifetime may pass the one asked for, and
// its start the present: the clocks of weft and the issuer differ a little.
const Slack = 2 * time.Minute

// Check reads an issuer's answer to req (status.certificate: PEM, the leaf
// first, then any intermediates) asked at askedAt, and returns the chain to
// serve, DER, leaf first, without the trust anchor. It refuses a
// certificate for another key, with any name besides those asked for, that
// is a CA, lives longer than asked, is not yet or no longer valid at now,
// lacks a usage the request needs, or does not chain to the trust bundle
// (PEM) alone: intermediates in the answer are used only as links.
func Check(answer []byte, req Request, askedAt, now time.Time, trust []byte) ([][]byte, error) {
	certs, err := identity.ParseCerts(answer)
	if err != nil {
		return nil, fmt.Errorf("reading the issuer's certificate: %w", err)
	}
	leaf := certs[0]
	if eq, ok := req.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(leaf.PublicKey) {
		return nil, errors.New("the issuer's certificate is for another key than the one weft asked for")
	}
	want := req.ID.String()
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		uris := make([]string, len(leaf.URIs))
		for i, u := range leaf.URIs {
			uris[i] = u.String()
		}
		return nil, fmt.Errorf("the issuer's certificate names the URIs %v; weft asked for %s alone", uris, want)
	}
	if !sameSet(leaf.DNSNames, req.DNSNames) {
		return nil, fmt.Errorf("the issuer's certificate names the DNS names %v; weft asked for %v", leaf.DNSNames, nonNil(req.DNSNames))
	}
	if len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 {
		return nil, fmt.Errorf("the issuer's certificate names %d IP addresses and %d email addresses; weft asked for none",
			len(leaf.IPAddresses), len(leaf.EmailAddresses))
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		return nil, errors.New("the issuer's certificate is a CA; weft asked for a leaf")
	}
	if limit := askedAt.Add(req.Duration + Slack); leaf.NotAfter.After(limit) {
		return nil, fmt.Errorf("the issuer's certificate lives until %s, past the %v asked for", leaf.NotAfter.UTC().Format(time.RFC3339), req.Duration)
	}
	if leaf.NotBefore.After(now.Add(Slack)) {
		return nil, fmt.Errorf("the issuer's certificate is valid only from %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("the issuer's certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	anchors, err := identity.ParseCerts(trust)
	if err != nil {
		return nil, fmt.Errorf("the mesh's trust bundle: %w", err)
	}
	roots, links := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range certs[1:] {
		links.AddCert(c)
	}
	// A chain must allow every usage (Verify accepts any one of those
	// listed), so each is verified on its own.
	var chain []*x509.Certificate
	for _, u := range req.usages() {
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: links, CurrentTime: verifyTime(leaf, now),
			KeyUsages: []x509.ExtKeyUsage{u}})
		if err != nil {
			return nil, fmt.Errorf("the issuer's certificate does not chain to the mesh's trust bundle for %s: %w", usageName(u), err)
		}
		chain = chains[0]
	}
	out := make([][]byte, 0, len(chain)-1)
	for _, c := range chain[:len(chain)-1] {
		out = append(out, c.Raw)
	}
	return out, nil
}

// verifyTime is now, or the leaf's start when it is a little ahead (Slack):
// the chain is checked as it will be once the clocks agree.
func verifyTime(leaf *x509.Certificate, now time.Time) time.Time {
	if leaf.NotBefore.After(now) {
		return leaf.NotBefore
	}
	return now
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageClientAuth {
		return "client authentication"
	}
	return "server authentication"
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
