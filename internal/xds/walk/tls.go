package walk

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// UpstreamTLS is how a proxy speaks to a cluster's endpoints over mTLS:
// the server identities it accepts and where its own certificate and the
// roots it trusts come from.
type UpstreamTLS struct {
	// SANs are the URI SANs accepted, exactly (a server presenting none of
	// them fails the handshake).
	SANs []string
	// Certificate and Roots name the source of the client's certificate
	// and of the trusted roots: an SDS secret ("sds:<name>"), a
	// certificate provider instance ("provider:<name>"), or a file
	// ("file:<path>").
	Certificate, Roots string
}

// upstreamTLS reads a cluster's TLS transport socket; nil when the
// cluster speaks plain text.
func upstreamTLS(c *clusterv3.Cluster) (*UpstreamTLS, error) {
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil, nil
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		return nil, fmt.Errorf("cluster %s: transport socket: %w", c.GetName(), err)
	}
	common := ctx.GetCommonTlsContext()
	out := &UpstreamTLS{}
	switch {
	case len(common.GetTlsCertificateSdsSecretConfigs()) > 0:
		out.Certificate = "sds:" + common.GetTlsCertificateSdsSecretConfigs()[0].GetName()
	case common.GetTlsCertificateProviderInstance() != nil:
		out.Certificate = "provider:" + common.GetTlsCertificateProviderInstance().GetInstanceName()
	case len(common.GetTlsCertificates()) > 0:
		out.Certificate = "file:" + common.GetTlsCertificates()[0].GetCertificateChain().GetFilename()
	}
	vc := common.GetValidationContext()
	if combined := common.GetCombinedValidationContext(); combined != nil {
		vc = combined.GetDefaultValidationContext()
		out.Roots = "sds:" + combined.GetValidationContextSdsSecretConfig().GetName()
	}
	switch {
	case vc.GetCaCertificateProviderInstance() != nil:
		out.Roots = "provider:" + vc.GetCaCertificateProviderInstance().GetInstanceName()
	case vc.GetTrustedCa() != nil:
		out.Roots = "file:" + vc.GetTrustedCa().GetFilename()
	}
	exact := func(m *matcherv3.StringMatcher) error {
		e := m.GetExact()
		if e == "" {
			return fmt.Errorf("cluster %s: a SAN matcher weft does not send: %v", c.GetName(), m)
		}
		out.SANs = append(out.SANs, e)
		return nil
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
			return nil, fmt.Errorf("cluster %s: a SAN matcher of type %v, weft sends URI only", c.GetName(), m.GetSanType())
		}
		if err := exact(m.GetMatcher()); err != nil {
			return nil, err
		}
	}
	for _, m := range vc.GetMatchSubjectAltNames() { //nolint:staticcheck // the field grpc-go reads
		if err := exact(m); err != nil {
			return nil, err
		}
	}
	return out, nil
}
