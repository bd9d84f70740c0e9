// Package casource sets up where the mesh's certificates come from, as
// --ca picks: weft's own CA (built in, or an intermediate someone else
// keeps in its Secret), or a cert-manager issuer that signs every
// certificate while weft holds no CA at all. Each gives the bundle the
// mesh trusts and the controller's own serving certificates; the first
// two give the CA that signs the workloads' leaves, the last the
// requests that get them.
package casource

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/identity/certmanager"
)

// The values of --ca.
const (
	Builtin     = "builtin"
	External    = "external"
	CertManager = "cert-manager"
)

// Config is what --ca and its flags say.
type Config struct {
	Source      string
	Namespace   string
	TrustDomain string
	// Issuer and TrustBundle (a ConfigMap in Namespace) are read with
	// CertManager only.
	Issuer      cmmeta.IssuerReference
	TrustBundle string
	Log         logr.Logger
	// OnChange is called when the bundle changed (a rotation).
	OnChange func()
}

// Validate names the flag that is wrong.
func (c Config) Validate() error {
	switch c.Source {
	case Builtin, External:
	case CertManager:
		if c.Issuer.Name == "" {
			return errors.New("--issuer-name: --ca=cert-manager needs the Issuer or ClusterIssuer that signs the certificates")
		}
		if c.Issuer.Kind == "" {
			return errors.New("--issuer-kind: empty; Issuer, ClusterIssuer, or an external issuer's kind")
		}
	default:
		return fmt.Errorf("--ca: %q is none of %s, %s, %s", c.Source, Builtin, External, CertManager)
	}
	return nil
}

// Trust is the mesh's trust as --ca set it up.
type Trust struct {
	// Root is weft's own CA, nil with CertManager.
	Root *identity.RootLoader
	// Bundle returns the roots the mesh trusts, PEM, nil until loaded.
	Bundle func() []byte

	loader    *identity.BundleLoader
	requester *certmanager.Requester
}

// New sets up c's source; Add starts it.
func New(c Config) (*Trust, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Source != CertManager {
		root := &identity.RootLoader{Namespace: c.Namespace, TrustDomain: c.TrustDomain, Log: c.Log.WithName("ca"),
			External: c.Source == External, OnChange: c.OnChange}
		return &Trust{Root: root, Bundle: root.Bundle}, nil
	}
	loader := &identity.BundleLoader{Namespace: c.Namespace, Name: c.TrustBundle, Log: c.Log.WithName("trust"), OnChange: c.OnChange}
	return &Trust{Bundle: loader.Bundle, loader: loader,
		requester: &certmanager.Requester{Namespace: c.Namespace, IssuerRef: c.Issuer, Trust: loader.Bundle, Log: c.Log.WithName("issuer")}}, nil
}

// Add gives the parts their client (one without a cache) and adds them to
// the manager: they run on every replica.
func (t *Trust) Add(mgr manager.Manager, direct client.Client) error {
	if t.Root != nil {
		t.Root.Client = direct
		if err := mgr.Add(t.Root); err != nil {
			return fmt.Errorf("adding the root CA loader: %w", err)
		}
		return nil
	}
	t.loader.Client, t.requester.Client = direct, direct
	if err := mgr.Add(t.loader); err != nil {
		return fmt.Errorf("adding the trust bundle loader: %w", err)
	}
	return nil
}

// ServerTLS serves one of the controller's servers (the webhook, xDS) as
// id for dnsNames, with a key made in memory: signed by weft's CA, or by
// the issuer.
func (t *Trust) ServerTLS(dnsNames []string, id identity.ID, log logr.Logger) *tls.Config {
	if t.Root != nil {
		return identity.ServerTLS(t.Root.Root, dnsNames, id)
	}
	// Asked again 2 s after a failure: at start the trust bundle may not
	// be loaded yet, and clients wait in their handshake meanwhile.
	return identity.RequestedServerTLS(t.requester.Serving(id, dnsNames, identity.ServingTTL), 2*time.Second, log)
}

// Leaves is the sidecars' source of leaves with CertManager (nil
// otherwise): requests of ttl, at most qps a second after a burst.
func (t *Trust) Leaves(ttl time.Duration, qps float64, burst int, log logr.Logger) *certmanager.Leaves {
	if t.requester == nil {
		return nil
	}
	return &certmanager.Leaves{Sign: t.requester.Sign, Trust: t.Bundle, TTL: ttl,
		Limiter: rate.NewLimiter(rate.Limit(qps), max(burst, 1)), Log: log}
}
