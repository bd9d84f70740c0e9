package identity

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/go-logr/logr"
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

// SignServing has a serving certificate for key signed elsewhere (an
// issuer weft asks) and returns its chain, leaf first, checked.
type SignServing func(ctx context.Context, key crypto.Signer) ([][]byte, error)

// RequestedServerTLS serves TLS with a certificate that sign has signed
// for a key made in memory: asked for on the first handshake, which waits
// for it while the client does, and again at half-life in the background
// while the old one serves until it expires. A failed request is asked
// again after retry (default 5 s).
func RequestedServerTLS(sign SignServing, retry time.Duration, log logr.Logger) *tls.Config {
	if retry <= 0 {
		retry = 5 * time.Second
	}
	s := &requestedCert{sign: sign, retry: retry, log: log}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.get}
}

type requestedCert struct {
	sign  SignServing
	retry time.Duration
	log   logr.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	renewAt time.Time
	asking  chan struct{} // closed when the request in flight ends
	retryAt time.Time
	failed  error
}

func (s *requestedCert) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	for {
		s.mu.Lock()
		now := time.Now()
		if s.cert != nil && now.Before(s.renewAt) {
			defer s.mu.Unlock()
			return s.cert, nil
		}
		if s.asking == nil && !now.Before(s.retryAt) {
			s.asking = make(chan struct{})
			go s.ask(s.asking)
		}
		if s.cert != nil && now.Before(s.cert.Leaf.NotAfter) {
			defer s.mu.Unlock()
			return s.cert, nil
		}
		asking, failed := s.asking, s.failed
		s.mu.Unlock()
		if asking == nil {
			return nil, fmt.Errorf("no serving certificate yet: %w", failed)
		}
		select {
		case <-asking:
		case <-hello.Context().Done():
			return nil, fmt.Errorf("no serving certificate yet: %w", hello.Context().Err())
		}
	}
}

func (s *requestedCert) ask(done chan struct{}) {
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cert, err := s.request(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asking = nil
	if err != nil {
		s.failed, s.retryAt = err, time.Now().Add(s.retry)
		s.log.Error(err, "Getting a serving certificate failed; asking again", "in", s.retry)
		return
	}
	s.cert, s.renewAt, s.failed = cert, RenewAt(cert.Leaf), nil
	s.log.Info("Serving with a new certificate", "notAfter", cert.Leaf.NotAfter)
}

func (s *requestedCert) request(ctx context.Context) (*tls.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	chain, err := s.sign(ctx, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}
