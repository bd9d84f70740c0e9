package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/weftmesh/weft/internal/wire"
)

// Leaf lifetimes: the default, and the most a request may ask for.
const (
	DefaultLeafTTL = 24 * time.Hour
	MaxLeafTTL     = 7 * 24 * time.Hour
	// MinLeafTTL is the least a leaf lives: shorter would renew faster
	// than anything can use it.
	MinLeafTTL = time.Minute
	// ClockSkew back-dates a leaf so that a peer whose clock runs a little
	// behind accepts it at once.
	ClockSkew = time.Minute
)

// CA signs leaves with a certificate and its key. Chain holds the CA's
// certificate and those above it up to (not including) the root, DER.
type CA struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain [][]byte
}

// NewRoot makes a self-signed root for a trust domain, ECDSA P-256, valid
// from now for ttl.
func NewRoot(trustDomain string, now time.Time, ttl time.Duration) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("making the root's key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}, CommonName: "weft root " + trustDomain},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1, // one intermediate (cert-manager's) may sit below
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{{Scheme: wire.SPIFFEScheme, Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Chain: [][]byte{der}}, nil
}

// LeafRequest is what a leaf is issued for: an identity already
// authenticated by the caller, the workload's public key, and the
// lifetime asked for (0 for the default).
type LeafRequest struct {
	ID        ID
	PublicKey crypto.PublicKey
	TTL       time.Duration
}

// Issue signs a leaf: exactly one URI SAN (the identity), for client and
// server authentication, living the asked lifetime within
// [MinLeafTTL, MaxLeafTTL] and never past the CA's own expiry. It returns
// the leaf and the chain above it, DER, leaf first.
func (ca *CA) Issue(req LeafRequest, now time.Time) ([][]byte, error) {
	if err := req.ID.Validate(); err != nil {
		return nil, err
	}
	if req.PublicKey == nil {
		return nil, errors.New("the request has no public key")
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultLeafTTL
	}
	if ttl < MinLeafTTL || ttl > MaxLeafTTL {
		return nil, fmt.Errorf("a leaf lifetime of %v is outside [%v, %v]", ttl, MinLeafTTL, MaxLeafTTL)
	}
	tmpl := &x509.Certificate{
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{req.ID.URI()},
	}
	chain, err := ca.sign(tmpl, req.PublicKey, ttl, now)
	if err != nil {
		return nil, fmt.Errorf("signing a leaf for %s: %w", req.ID, err)
	}
	return chain, nil
}

// sign is where every certificate weft issues below its CA is made (the
// workloads' leaves and the control plane's serving certificates): a
// random serial, back-dated by ClockSkew, living ttl but never past the
// CA, for digital signatures only, no CA. tmpl says the names and the
// extended key usages. It returns the certificate and the chain above it,
// DER, leaf first.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey, ttl time.Duration, now time.Time) ([][]byte, error) {
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("the CA %q expired at %v", ca.Cert.Subject.CommonName, ca.Cert.NotAfter)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-ClockSkew), notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, false
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return append([][]byte{der}, ca.Chain...), nil
}

// NewKey makes the private key of a certificate weft issues: ECDSA P-256,
// in memory.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// RenewAt is when a leaf weft issued should be replaced: half way through
// the life it was issued for (its NotBefore is back-dated by ClockSkew,
// which does not count).
func RenewAt(leaf *x509.Certificate) time.Time {
	issued := leaf.NotBefore.Add(ClockSkew)
	return issued.Add(leaf.NotAfter.Sub(issued) / 2)
}

// IDOf returns the identity in a leaf, which must carry exactly one URI
// SAN and nothing else as a name.
func IDOf(leaf *x509.Certificate) (ID, error) {
	if len(leaf.URIs) != 1 || len(leaf.DNSNames) > 0 || len(leaf.IPAddresses) > 0 || len(leaf.EmailAddresses) > 0 {
		return ID{}, fmt.Errorf("a workload certificate carries exactly one URI SAN and no other name; this one has %d URIs, %d DNS names, %d IPs, %d emails",
			len(leaf.URIs), len(leaf.DNSNames), len(leaf.IPAddresses), len(leaf.EmailAddresses))
	}
	return ParseID(leaf.URIs[0].String())
}

// EncodeCerts writes DER certificates as PEM.
func EncodeCerts(ders [][]byte) []byte {
	var b bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d}) // writing to a buffer does not fail
	}
	return b.Bytes()
}

// ParseCerts reads PEM certificates.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("making a serial number: %w", err)
	}
	return serial, nil
}
