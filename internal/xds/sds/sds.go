// Package sds certifies sidecars: each proxy that proved an identity gets a
// leaf for spiffe://<trust domain>/ns/<namespace>/sa/<service account>,
// made in memory and served only as that proxy's own SDS secrets, renewed
// at half-life and re-issued when the mesh root rotates. It holds the
// leaves under its own lock; the xDS server asks it for a proxy's secrets
// when it translates that proxy's own resources.
package sds

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Issuer makes and keeps the sidecars' leaves.
type Issuer struct {
	// Signer returns the mesh CA, or nil while it is not loaded.
	signer      func() *identity.Root
	trustDomain string
	ttl         time.Duration

	mu     sync.Mutex
	leaves map[string]*leaf
}

// New returns an issuer signing with signer's CA in trustDomain, leaves
// living ttl (identity's default when zero).
func New(signer func() *identity.Root, trustDomain string, ttl time.Duration) *Issuer {
	return &Issuer{signer: signer, trustDomain: trustDomain, ttl: ttl, leaves: map[string]*leaf{}}
}

// leaf is one proxy's certificate. Its key is never written anywhere but
// into the proxy's own SDS secret.
type leaf struct {
	id       identity.ID
	secrets  []*tlsv3.Secret
	renewAt  time.Time
	notAfter time.Time
	// root is the CA that signed it: a rotated root re-issues it.
	root *identity.Root
}

// Secrets returns a proxy's SDS secrets (translate.Secrets) for the
// ServiceAccount namespace/serviceAccount it proved, making a leaf when it
// has none, when the identity or the root changed, or at half-life.
func (i *Issuer) Secrets(proxy, namespace, serviceAccount string, now time.Time) ([]*tlsv3.Secret, error) {
	root := i.signer()
	if root == nil {
		return nil, fmt.Errorf("proxy %s: the mesh CA is not loaded yet", proxy)
	}
	id := identity.ID{TrustDomain: i.trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	i.mu.Lock()
	l := i.leaves[proxy]
	i.mu.Unlock()
	if l != nil && l.id == id && sameRoot(l.root, root) && now.Before(l.renewAt) {
		return l.secrets, nil
	}
	l, err := i.issue(id, root, now)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy, err)
	}
	i.mu.Lock()
	i.leaves[proxy] = l
	i.mu.Unlock()
	return l.secrets, nil
}

func (i *Issuer) issue(id identity.ID, root *identity.Root, now time.Time) (*leaf, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	chain, err := root.CA.Issue(identity.LeafRequest{ID: id, PublicKey: key.Public(), TTL: i.ttl}, now)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("reading the leaf just issued: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the leaf's key: %w", err)
	}
	secrets := translate.Secrets(identity.EncodeCerts(chain), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), root.Bundle)
	return &leaf{id: id, secrets: secrets, renewAt: identity.RenewAt(cert), notAfter: cert.NotAfter, root: root}, nil
}

// Due says whether a proxy's leaf must be replaced: at half-life, or when
// the mesh root was rotated (the new leaf, and the bundle with both roots,
// go out together).
func (i *Issuer) Due(proxy string, now time.Time) bool {
	i.mu.Lock()
	l := i.leaves[proxy]
	i.mu.Unlock()
	return l != nil && (!now.Before(l.renewAt) || !sameRoot(i.signer(), l.root))
}

// Leaf says what a proxy's leaf certifies and when it expires.
func (i *Issuer) Leaf(proxy string) (id identity.ID, notAfter time.Time, ok bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	l := i.leaves[proxy]
	if l == nil {
		return identity.ID{}, time.Time{}, false
	}
	return l.id, l.notAfter, true
}

// Forget drops a proxy's leaf (it disconnected).
func (i *Issuer) Forget(proxy string) {
	i.mu.Lock()
	delete(i.leaves, proxy)
	i.mu.Unlock()
}

// RenewEvery is how often a holder of leaves living ttl should look for
// those due: often enough to renew each well before it expires.
func RenewEvery(ttl time.Duration) time.Duration {
	every := 10 * time.Second
	if ttl > 0 && ttl/20 < every {
		every = max(ttl/20, time.Second)
	}
	return every
}

// sameRoot says whether two roots sign with the same CA and trust the same
// bundle.
func sameRoot(a, b *identity.Root) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.CA.Cert.Equal(b.CA.Cert) && bytes.Equal(a.Bundle, b.Bundle)
}
