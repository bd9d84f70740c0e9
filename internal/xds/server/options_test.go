package server

import (
	"crypto/tls"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// New refuses every combination of options that would serve something
// broken, naming the option; the combinations main.go builds pass.
func TestNewValidatesOptions(t *testing.T) {
	signer := func() *identity.Root { return nil }
	authn := &auth.Authenticator{}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	for _, c := range []struct {
		name string
		o    Options
		want string // "" when valid
	}{
		{"plain, on loopback", Options{Address: "127.0.0.1:0"}, ""},
		{"authenticated with SDS leaves", Options{Address: ":15012", Auth: authn, TLS: tlsCfg, Signer: signer, TrustDomain: "cluster.local",
			LeafTTL: identity.MinLeafTTL, EnvoyCerts: translate.EnvoyCertsSDS}, ""},
		{"no address", Options{}, "Address"},
		{"signer without authentication", Options{Address: ":1", Signer: signer, TrustDomain: "cluster.local"}, "Signer"},
		{"signer without trust domain", Options{Address: ":1", Auth: authn, TLS: tlsCfg, Signer: signer}, "TrustDomain"},
		{"leaf lifetime out of range", Options{Address: ":1", Auth: authn, TLS: tlsCfg, Signer: signer, TrustDomain: "td", LeafTTL: identity.MaxLeafTTL * 2}, "LeafTTL"},
		{"SDS certificates without a signer", Options{Address: ":1", EnvoyCerts: translate.EnvoyCertsSDS}, "EnvoyCerts"},
		{"pod certificates without a signer name", Options{Address: ":1", PodCertificates: nil, PodCertificateSigner: "weft.dev/workload"}, "PodCertificates and PodCertificateSigner"},
		{"authentication without TLS", Options{Address: ":1", Auth: authn}, "TLS"},
	} {
		c.o.Log = logr.Discard()
		s, err := New(c.o)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == "" && s == nil:
			t.Errorf("%s: no server", c.name)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want+":")):
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.want)
		}
	}
}
