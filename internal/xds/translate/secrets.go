package translate

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/weftmesh/weft/internal/wire"
)

// Names of a sidecar's SDS secrets: its own certificate and key, and the
// roots it trusts.
const (
	SecretCertificate = wire.SDSCertificate
	SecretRoots       = wire.SDSRoots
)

// Secrets makes a sidecar's SDS secrets from PEM: its certificate chain
// and key, and the mesh's trusted roots. They exist only in memory and on
// the proxy's own authenticated stream.
func Secrets(chainPEM, keyPEM, rootsPEM []byte) []*tlsv3.Secret {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	return []*tlsv3.Secret{
		{Name: SecretCertificate, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(chainPEM), PrivateKey: inline(keyPEM),
		}}},
		{Name: SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(rootsPEM),
		}}},
	}
}
