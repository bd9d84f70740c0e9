package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// ServingTTL is the lifetime of the controller's own serving certificates;
// they renew at half-life, in memory.
const ServingTTL = 24 * time.Hour

// IssueServing signs a certificate for a server of the control plane: its
// DNS names (what clients dial) and its identity as the one URI SAN.
func (ca *CA) IssueServing(dnsNames []string, id ID, pub any, now time.Time) ([][]byte, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("a serving certificate needs a DNS name")
	}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		URIs:        []*url.URL{id.URI()},
	}
	chain, err := ca.sign(tmpl, pub, ServingTTL, now)
	if err != nil {
		return nil, fmt.Errorf("signing a serving certificate for %v: %w", dnsNames, err)
	}
	return chain, nil
}

// ServerTLS serves TLS with a certificate from the mesh CA (as root()
// returns it, nil until loaded), made on the first handshake and again at
// half-life; its key never leaves memory.
func ServerTLS(root func() *Root, dnsNames []string, id ID) *tls.Config {
	s := &servingCert{root: root, dnsNames: dnsNames, id: id}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.get}
}

type servingCert struct {
	root     func() *Root
	dnsNames []string
	id       ID

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
}

func (s *servingCert) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cert != nil && now.Before(s.renewAt) {
		return s.cert, nil
	}
	root := s.root()
	if root == nil {
		return nil, errors.New("the mesh CA is not loaded yet")
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	chain, err := root.CA.IssueServing(s.dnsNames, s.id, key.Public(), now)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	s.cert = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	s.renewAt = RenewAt(leaf)
	return s.cert, nil
}
