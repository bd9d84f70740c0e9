// Package sds certifies sidecars: each proxy that proved an identity gets a
// leaf for spiffe://<trust domain>/ns/<namespace>/sa/<service account>,
// made in memory and served only as that proxy's own SDS secrets, renewed
// at half-life and re-issued when the mesh root rotates. The leaves come
// from a Source: weft's own CA, or an issuer weft asks. It holds the
// leaves under its own lock; the xDS server asks it for a proxy's secrets
// when it translates that proxy's own resources.
package sds

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// A Source signs the leaves an Issuer serves: weft's own CA (CASource),
// or an issuer weft asks (certmanager.Leaves).
type Source interface {
	// Leaf returns a leaf for id, made now or handed out before (a
	// source may share one among the proxies of an identity). An error
	// wrapping ErrWaiting says that one is on its way.
	Leaf(id identity.ID, now time.Time) (*identity.Leaf, error)
	// Current says whether a leaf it returned is still the one to serve
	// at now: not due for renewal, from the CA in force, with the
	// bundle in force.
	Current(l *identity.Leaf, now time.Time) bool
}

// A Notifier is a Source that calls back when leaves it was waiting for
// have come: the proxies waiting on them are served at once.
type Notifier interface {
	OnLeaves(func())
}

// ErrWaiting is wrapped by a Source that has no leaf for an identity yet:
// it asked for one (identity.ErrWaiting).
var ErrWaiting = identity.ErrWaiting

// LeafError says a proxy's leaf could not be had for another reason than
// waiting: the CA is not loaded, or the source failed or refused.
type LeafError struct {
	Proxy string
	Err   error
}

func (e *LeafError) Error() string { return "proxy " + e.Proxy + ": " + e.Err.Error() }
func (e *LeafError) Unwrap() error { return e.Err }

// Issuer keeps each sidecar's leaf.
type Issuer struct {
	source Source

	mu     sync.Mutex
	leaves map[string]*served
}

// New returns an issuer serving source's leaves.
func New(source Source) *Issuer {
	return &Issuer{source: source, leaves: map[string]*served{}}
}

// served is the leaf a proxy was given, and its SDS secrets.
type served struct {
	leaf    *identity.Leaf
	secrets []*tlsv3.Secret
}

// Secrets returns a proxy's SDS secrets (translate.Secrets) for the
// ServiceAccount namespace/serviceAccount it proved, asking the source for
// a leaf when it has none, when the identity changed, or when its leaf is
// no longer current.
func (i *Issuer) Secrets(proxy string, id identity.ID, now time.Time) ([]*tlsv3.Secret, error) {
	i.mu.Lock()
	s := i.leaves[proxy]
	i.mu.Unlock()
	if s != nil && s.leaf.ID == id && i.source.Current(s.leaf, now) {
		return s.secrets, nil
	}
	l, err := i.source.Leaf(id, now)
	if errors.Is(err, ErrWaiting) {
		return nil, fmt.Errorf("proxy %s: %w", proxy, err)
	}
	if err != nil {
		return nil, &LeafError{Proxy: proxy, Err: err}
	}
	if s != nil && s.leaf == l {
		// The source has nothing newer yet (a renewal on its way).
		return s.secrets, nil
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		return nil, &LeafError{Proxy: proxy, Err: fmt.Errorf("encoding the leaf's key: %w", err)}
	}
	s = &served{leaf: l, secrets: translate.Secrets(identity.EncodeCerts(l.Chain), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), l.Bundle)}
	i.mu.Lock()
	i.leaves[proxy] = s
	i.mu.Unlock()
	metrics.CertificatesIssued.WithLabelValues(metrics.DeliverySDS).Inc()
	return s.secrets, nil
}

// Soonest returns the soonest expiry among the leaves served, false when
// none is.
func (i *Issuer) Soonest() (time.Time, bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	var soonest time.Time
	for _, s := range i.leaves {
		if soonest.IsZero() || s.leaf.NotAfter.Before(soonest) {
			soonest = s.leaf.NotAfter
		}
	}
	return soonest, !soonest.IsZero()
}

// Due says whether a proxy's leaf must be replaced: at half-life, or when
// the mesh root was rotated (the new leaf, and the bundle with both roots,
// go out together).
func (i *Issuer) Due(proxy string, now time.Time) bool {
	i.mu.Lock()
	s := i.leaves[proxy]
	i.mu.Unlock()
	return s != nil && !i.source.Current(s.leaf, now)
}

// Leaf says what a proxy's leaf certifies and when it expires.
func (i *Issuer) Leaf(proxy string) (id identity.ID, notAfter time.Time, ok bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := i.leaves[proxy]
	if s == nil {
		return identity.ID{}, time.Time{}, false
	}
	return s.leaf.ID, s.leaf.NotAfter, true
}

// Forget drops a proxy's leaf (it disconnected).
func (i *Issuer) Forget(proxy string) {
	i.mu.Lock()
	delete(i.leaves, proxy)
	i.mu.Unlock()
}

// CASource signs a new leaf, with a new key, for each proxy with the mesh
// CA weft holds.
type CASource struct {
	// Root returns the mesh CA, or nil while it is not loaded.
	Root func() *identity.Root
	// TTL is the leaves' lifetime (identity's default when zero).
	TTL time.Duration
}

// Leaf signs a leaf for id.
func (c CASource) Leaf(id identity.ID, now time.Time) (*identity.Leaf, error) {
	root := c.Root()
	if root == nil {
		return nil, errors.New("the mesh CA is not loaded yet")
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	chain, err := root.CA.Issue(identity.LeafRequest{ID: id, PublicKey: key.Public(), TTL: c.TTL}, now)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("reading the leaf just issued: %w", err)
	}
	return &identity.Leaf{ID: id, Chain: chain, Key: key, Bundle: root.Bundle, CA: root.CA.Cert.Raw,
		RenewAt: identity.RenewAt(cert), NotAfter: cert.NotAfter}, nil
}

// Current says a leaf is before half-life and from the root in force,
// whose bundle it carries.
func (c CASource) Current(l *identity.Leaf, now time.Time) bool {
	root := c.Root()
	return root != nil && now.Before(l.RenewAt) && bytes.Equal(l.CA, root.CA.Cert.Raw) && bytes.Equal(l.Bundle, root.Bundle)
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
