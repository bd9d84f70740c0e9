package server

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// leaf is a sidecar's certificate, made in memory for the identity its
// stream proved, and replaced at half-life. Its key is never written
// anywhere but into the proxy's own SDS secret.
type leaf struct {
	id       identity.ID
	secrets  []*tlsv3.Secret
	renewAt  time.Time
	notAfter time.Time
	// root is the CA that signed it: a rotated root re-issues it.
	root *identity.Root
}

// secretsLocked returns a sidecar's SDS secrets, making or renewing its
// leaf as needed; nil when the server issues none (no CA, or proxies do
// not authenticate: an identity must be proven before it is certified).
func (s *Server) secretsLocked(proxy string, now time.Time) ([]*tlsv3.Secret, error) {
	who, ok := s.proxyIdentity[proxy]
	if !ok || s.Signer == nil {
		return nil, nil
	}
	root := s.Signer()
	if root == nil {
		return nil, fmt.Errorf("proxy %s: the mesh CA is not loaded yet", proxy)
	}
	id := identity.ID{TrustDomain: s.TrustDomain, Namespace: who.Namespace, ServiceAccount: who.ServiceAccount}
	if l := s.leaves[proxy]; l != nil && l.id == id && sameRoot(l.root, root) && now.Before(l.renewAt) {
		return l.secrets, nil
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	chain, err := root.CA.Issue(identity.LeafRequest{ID: id, PublicKey: key.Public(), TTL: s.LeafTTL}, now)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", proxy, err)
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	secrets := translate.Secrets(identity.EncodeCerts(chain), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), root.Bundle)
	s.leaves[proxy] = &leaf{id: id, secrets: secrets, renewAt: identity.RenewAt(cert), notAfter: cert.NotAfter, root: root}
	return secrets, nil
}

// renewalDue says whether a sidecar's leaf must be replaced: at
// half-life, or when the mesh root was rotated (the new leaf, and the
// bundle with both roots, go out together).
func (s *Server) renewalDueLocked(proxy string, now time.Time) bool {
	l := s.leaves[proxy]
	return l != nil && (!now.Before(l.renewAt) || (s.Signer != nil && !sameRoot(s.Signer(), l.root)))
}

// sameRoot says whether two roots sign with the same CA and trust the same
// bundle.
func sameRoot(a, b *identity.Root) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.CA.Cert.Equal(b.CA.Cert) && bytes.Equal(a.Bundle, b.Bundle)
}
