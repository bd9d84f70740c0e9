package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"time"
)

// With an external CA (cert-manager's intermediate, or one the user
// brings), the mesh trusts workload identities only through the CA that
// weft signs with, not through the external root above it: anything else
// that root signed (another team's intermediate, another cluster's) could
// otherwise name any SPIFFE ID of the trust domain. So the bundle that
// workloads, sidecars and weft's own servers check peers against holds
// the signing CA itself as the trust anchor (Go's verifier and Envoy's
// both accept an anchor that is not self-signed), and, after the external
// issuer renews it, the earlier ones for as long as leaves they signed may
// still be in use: AnchorRetention past the moment they stopped signing.

// AnchorRetention is how long a signing CA stays trusted after it was
// replaced: the longest lifetime of a leaf weft signs.
const AnchorRetention = MaxLeafTTL

// Anchor is a signing CA the mesh trusts; Until is when a replaced one
// stops being trusted (zero while it signs).
type Anchor struct {
	Cert  *x509.Certificate
	Until time.Time
}

// Fingerprint names a certificate: the SHA-256 of its DER, hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// NextAnchors returns the anchors after current became (or stayed) the
// signing CA at now: current first, then the earlier ones, each kept
// AnchorRetention past the moment it was first seen replaced and never
// past its own expiry. A certificate listed twice is kept once, with the
// later Until.
func NextAnchors(prev []Anchor, current *x509.Certificate, now time.Time) []Anchor {
	out := []Anchor{{Cert: current}}
	for _, a := range prev {
		if a.Cert.Equal(current) {
			continue
		}
		until := a.Until
		if until.IsZero() {
			until = now.Add(AnchorRetention)
		}
		if a.Cert.NotAfter.Before(until) {
			until = a.Cert.NotAfter
		}
		if !now.Before(until) {
			continue
		}
		if i := slices.IndexFunc(out, func(o Anchor) bool { return o.Cert.Equal(a.Cert) }); i >= 0 {
			if until.After(out[i].Until) && !out[i].Until.IsZero() {
				out[i].Until = until
			}
			continue
		}
		out = append(out, Anchor{Cert: a.Cert, Until: until})
	}
	return out
}

// AnchorsPEM encodes the anchors' certificates, current first.
func AnchorsPEM(anchors []Anchor) []byte {
	der := make([][]byte, len(anchors))
	for i, a := range anchors {
		der[i] = a.Cert.Raw
	}
	return EncodeCerts(der)
}
