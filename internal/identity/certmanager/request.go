package certmanager

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/metrics"
)

// Labels and annotations weft puts on its CertificateRequests: approvers
// (cert-manager's approver-policy) and people can tell them apart.
const (
	ManagedByLabel     = "app.kubernetes.io/managed-by"
	ManagedBy          = "weft"
	IdentityAnnotation = "mesh.weft.dev/identity"
)

// ErrRefused is wrapped by Sign's error when the issuer answered with a
// certificate that failed Check: nothing was served with it.
var ErrRefused = errors.New("refused the certificate")

func isRefused(err error) bool { return errors.Is(err, ErrRefused) }

// Requester asks a cert-manager issuer for certificates, one
// CertificateRequest each. It never approves a request: cert-manager's
// approver, or a policy the cluster's admins keep, does.
type Requester struct {
	// Client creates, reads and deletes CertificateRequests (cert-manager's
	// types in its scheme); use one without a cache.
	Client client.Client
	// Namespace is where the requests are made (weft's own).
	Namespace string
	// IssuerRef names the Issuer (in Namespace) or ClusterIssuer.
	IssuerRef cmmeta.IssuerReference
	// Trust returns the mesh's trust bundle (PEM), nil until loaded:
	// every answer must chain to it.
	Trust func() []byte
	// Poll is the first wait between reads of a request; it grows to 5 s
	// (default 200 ms).
	Poll time.Duration
	Log  logr.Logger
}

// Sign asks for req's certificate and waits until the issuer answers, ctx
// ends, or the request is denied or fails; it returns the checked chain
// (Check). The request is deleted when it ends, answered or not.
func (r *Requester) Sign(ctx context.Context, req Request) ([][]byte, error) {
	trust := r.Trust()
	if trust == nil {
		return nil, errors.New("the mesh's trust bundle is not loaded yet")
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{req.ID.URI()}, DNSNames: req.DNSNames}, req.Key)
	if err != nil {
		return nil, fmt.Errorf("making the CSR for %s: %w", req.ID, err)
	}
	cr := &cmapi.CertificateRequest{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.Namespace, GenerateName: "weft-",
			Labels:      map[string]string{ManagedByLabel: ManagedBy},
			Annotations: map[string]string{IdentityAnnotation: req.ID.String()},
		},
		Spec: cmapi.CertificateRequestSpec{
			Request:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}),
			IssuerRef: r.IssuerRef,
			Duration:  &metav1.Duration{Duration: req.Duration},
			Usages:    usagesOf(req),
		},
	}
	askedAt := time.Now()
	if err := r.Client.Create(ctx, cr); err != nil {
		return nil, fmt.Errorf("creating a CertificateRequest for %s: %w", req.ID, err)
	}
	log := r.Log.WithValues("certificateRequest", r.Namespace+"/"+cr.Name, "identity", req.ID.String())
	defer func() {
		if err := r.remove(ctx, cr); err != nil {
			log.Error(err, "Deleting a finished CertificateRequest failed; it stays until someone deletes it")
		}
	}()
	answer, err := r.await(ctx, cr)
	if err != nil {
		metrics.IssuerRequests.WithLabelValues(metrics.RequestFailed).Inc()
		return nil, fmt.Errorf("%s: %w", r.issuerName(), err)
	}
	// The bundle may have changed while the issuer worked.
	chain, err := Check(answer, req, askedAt, time.Now(), r.Trust())
	if err != nil {
		log.Info("Refused the issuer's certificate", "reason", err.Error())
		metrics.IssuerRequests.WithLabelValues(metrics.RequestRefused).Inc()
		return nil, fmt.Errorf("%s: %w: %w", r.issuerName(), ErrRefused, err)
	}
	metrics.IssuerRequests.WithLabelValues(metrics.RequestIssued).Inc()
	log.V(1).Info("The issuer signed a certificate", "in", time.Since(askedAt).Round(time.Millisecond))
	return chain, nil
}

func (r *Requester) issuerName() string {
	kind := r.IssuerRef.Kind
	if kind == "" {
		kind = cmapi.IssuerKind
	}
	if kind == cmapi.IssuerKind {
		return fmt.Sprintf("the %s %s/%s", kind, r.Namespace, r.IssuerRef.Name)
	}
	return fmt.Sprintf("the %s %s", kind, r.IssuerRef.Name)
}

// await reads the request until it is issued, denied or failed.
func (r *Requester) await(ctx context.Context, cr *cmapi.CertificateRequest) ([]byte, error) {
	wait := r.Poll
	if wait <= 0 {
		wait = 200 * time.Millisecond
	}
	key := client.ObjectKeyFromObject(cr)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no answer to the CertificateRequest: %w", context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(wait*3/2, 5*time.Second)
		if err := r.Client.Get(ctx, key, cr); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, errors.New("the CertificateRequest was deleted before it was answered")
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("no answer to the CertificateRequest: %w", context.Cause(ctx))
			}
			continue // read again
		}
		if c := condition(cr, cmapi.CertificateRequestConditionDenied); c != nil && c.Status == cmmeta.ConditionTrue {
			return nil, fmt.Errorf("the CertificateRequest was denied (%s): %s", c.Reason, c.Message)
		}
		if c := condition(cr, cmapi.CertificateRequestConditionInvalidRequest); c != nil && c.Status == cmmeta.ConditionTrue {
			return nil, fmt.Errorf("the issuer found the CertificateRequest invalid (%s): %s", c.Reason, c.Message)
		}
		c := condition(cr, cmapi.CertificateRequestConditionReady)
		switch {
		case c == nil:
		case c.Status == cmmeta.ConditionTrue && len(cr.Status.Certificate) > 0:
			return cr.Status.Certificate, nil
		case c.Status == cmmeta.ConditionFalse && (c.Reason == cmapi.CertificateRequestReasonFailed || c.Reason == cmapi.CertificateRequestReasonDenied):
			return nil, fmt.Errorf("the issuer failed the CertificateRequest (%s): %s", c.Reason, c.Message)
		}
	}
}

// remove deletes a finished request, even when ctx has ended.
func (r *Requester) remove(ctx context.Context, cr *cmapi.CertificateRequest) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.Client.Delete(ctx, cr); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

func condition(cr *cmapi.CertificateRequest, t cmapi.CertificateRequestConditionType) *cmapi.CertificateRequestCondition {
	for i := range cr.Status.Conditions {
		if cr.Status.Conditions[i].Type == t {
			return &cr.Status.Conditions[i]
		}
	}
	return nil
}

func usagesOf(req Request) []cmapi.KeyUsage {
	u := []cmapi.KeyUsage{cmapi.UsageDigitalSignature}
	for _, e := range req.usages() {
		if e == x509.ExtKeyUsageClientAuth {
			u = append(u, cmapi.UsageClientAuth)
		} else {
			u = append(u, cmapi.UsageServerAuth)
		}
	}
	return u
}

// Serving returns what signs the controller's own serving certificates
// (identity.RequestedServerTLS) for id and dnsNames.
func (r *Requester) Serving(id identity.ID, dnsNames []string, ttl time.Duration) identity.SignServing {
	return func(ctx context.Context, key crypto.Signer) ([][]byte, error) {
		return r.Sign(ctx, Request{ID: id, DNSNames: dnsNames, Key: key, Duration: ttl})
	}
}
