// Package identity is weft's certificate authority for workloads: SPIFFE
// identities, the signing CA and where its key comes from, and the leaves
// it issues. A leaf carries exactly one URI SAN, derived from an
// authenticated identity, never from what a client asks for.
package identity

import (
	"fmt"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weftmesh/weft/internal/wire"
)

// ID is a workload's SPIFFE identity:
// spiffe://<trust domain>/ns/<namespace>/sa/<service account> (its form is
// wire.SPIFFEID's).
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// Validate checks that every part is what Kubernetes and SPIFFE allow.
func (id ID) Validate() error {
	if errs := validation.IsDNS1123Subdomain(id.TrustDomain); len(errs) > 0 {
		return fmt.Errorf("trust domain %q: %s", id.TrustDomain, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(id.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", id.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(id.ServiceAccount); len(errs) > 0 {
		return fmt.Errorf("service account %q: %s", id.ServiceAccount, strings.Join(errs, "; "))
	}
	return nil
}

// URI is the identity as the URI SAN of a certificate.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: wire.SPIFFEScheme, Host: id.TrustDomain, Path: wire.SPIFFEPath(id.Namespace, id.ServiceAccount)}
}

func (id ID) String() string { return id.URI().String() }

// ParseID reads a SPIFFE ID of weft's form.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", s, err)
	}
	ns, sa, ok := wire.ParseSPIFFEPath(u.Path)
	if !ok || u.Scheme != wire.SPIFFEScheme || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return ID{}, fmt.Errorf("SPIFFE ID %q is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>", s)
	}
	id := ID{TrustDomain: u.Host, Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", s, err)
	}
	return id, nil
}
