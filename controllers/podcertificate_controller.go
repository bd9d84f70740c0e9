package controllers

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/wire"
)

// Reasons weft gives on the Denied and Failed conditions of a
// PodCertificateRequest.
const (
	ReasonPodNotFound           = "PodNotFound"
	ReasonPodMismatch           = "PodMismatch"
	ReasonUnsupportedKey        = "UnsupportedKeyType"
	ReasonSignerNotReady        = "SignerNotReady"
	ReasonIssued                = "Issued"
	podCertificateSignerRequeue = 2 * time.Second
)

// The signer reads the pods it certifies (already watched by the mesh
// model), signs requests for its signer name (the API server checks the
// "sign" verb on the signer), and writes their status.
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests,verbs=list;watch
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=podcertificaterequests/status,verbs=update
// +kubebuilder:rbac:groups=certificates.k8s.io,resources=signers,resourceNames=weft.dev/workload,verbs=sign

// PodCertificateSigner signs the PodCertificateRequests addressed to
// weft's signer name. The API server vouches for the request (the kubelet
// of the pod's node made it; pod, service account and node are its); weft
// checks that they still describe a live pod, on that node, running as
// that service account, and refuses anything else with a reason. The leaf
// names the pod's SPIFFE identity as its one URI SAN, lives what the
// request asks within weft's bounds, and is refreshed at half-life.
type PodCertificateSigner struct {
	Client      client.Client
	SignerName  string
	TrustDomain string
	// Root returns the signing CA, nil until it is loaded.
	Root func() *identity.Root
	Now  func() time.Time
	// Events, when set, records a refused request as a Warning Event on
	// its pod (Setup sets it from Options.Events).
	Events events.EventRecorder
}

// Reconcile signs or refuses one request.
func (r *PodCertificateSigner) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pcr certificatesv1.PodCertificateRequest
	if err := r.Client.Get(ctx, req.NamespacedName, &pcr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pcr.Spec.SignerName != r.SignerName || decided(&pcr) {
		return reconcile.Result{}, nil
	}
	root := r.Root()
	if root == nil {
		return reconcile.Result{RequeueAfter: podCertificateSignerRequeue}, nil // the CA is loading
	}
	pod, err := r.pod(ctx, &pcr)
	if err != nil {
		return reconcile.Result{}, err
	}
	chain, reason, why := Sign(&pcr, pod, r.TrustDomain, root, r.now())
	if reason != "" {
		return reconcile.Result{}, r.decide(ctx, &pcr, certificatesv1.PodCertificateRequestConditionTypeDenied, reason, why)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return reconcile.Result{}, err
	}
	// The chain ends below the root: proxies trust the root from the
	// bundle.
	pcr.Status.CertificateChain = string(identity.EncodeCerts(chain[:len(chain)-1]))
	if len(chain) == 1 {
		pcr.Status.CertificateChain = string(identity.EncodeCerts(chain))
	}
	pcr.Status.NotBefore = &metav1.Time{Time: leaf.NotBefore}
	pcr.Status.BeginRefreshAt = &metav1.Time{Time: identity.RenewAt(leaf)}
	pcr.Status.NotAfter = &metav1.Time{Time: leaf.NotAfter}
	meta.SetStatusCondition(&pcr.Status.Conditions, metav1.Condition{
		Type: certificatesv1.PodCertificateRequestConditionTypeIssued, Status: metav1.ConditionTrue, Reason: ReasonIssued,
		Message: "Issued for " + leaf.URIs[0].String(), ObservedGeneration: pcr.Generation,
	})
	if err := r.Client.Status().Update(ctx, &pcr); err != nil {
		return reconcile.Result{}, fmt.Errorf("writing the certificate of %s: %w", req.NamespacedName, err)
	}
	metrics.CertificatesIssued.WithLabelValues(metrics.DeliveryPodCertificate).Inc()
	return reconcile.Result{}, nil
}

// pod reads the pod a request names; nil when there is none.
func (r *PodCertificateSigner) pod(ctx context.Context, pcr *certificatesv1.PodCertificateRequest) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: pcr.Namespace, Name: pcr.Spec.PodName}, &pod)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", pcr.Namespace, pcr.Spec.PodName, err)
	}
	return &pod, nil
}

// Sign judges a request against the pod it names (nil: none) and, when
// the request holds, issues its leaf with root at now: the chain, or the
// reason and message of the refusal. The pod must exist with the
// request's UID, on its node, as its service account; the stub CSR must
// carry a public key weft can certify. The leaf names exactly the pod's
// SPIFFE identity and lives what the request asks, within weft's bounds
// and back-dating included. It reads nothing and writes nothing.
func Sign(pcr *certificatesv1.PodCertificateRequest, pod *corev1.Pod, trustDomain string, root *identity.Root, now time.Time) (chain [][]byte, reason, why string) {
	id, reason, why := judge(pcr, pod, trustDomain)
	if reason != "" {
		return nil, reason, why
	}
	csr, err := x509.ParseCertificateRequest(pcr.Spec.StubPKCS10Request)
	if err != nil {
		return nil, ReasonUnsupportedKey, "spec.stubPKCS10Request is not a PKCS#10 request: " + err.Error()
	}
	// The whole validity, back-dating included, stays within what the
	// request allows (the API server checks it).
	ttl := identity.DefaultLeafTTL
	if m := pcr.Spec.MaxExpirationSeconds; m != nil {
		ttl = min(time.Duration(*m)*time.Second, identity.MaxLeafTTL)
	}
	ttl -= identity.ClockSkew
	chain, err = root.CA.Issue(identity.LeafRequest{ID: id, PublicKey: csr.PublicKey, TTL: max(ttl, identity.MinLeafTTL)}, now)
	if err != nil {
		return nil, ReasonUnsupportedKey, err.Error()
	}
	return chain, "", ""
}

// judge compares a request with the pod it names: the pod must exist
// with that UID, on that node, as that service account.
func judge(pcr *certificatesv1.PodCertificateRequest, pod *corev1.Pod, trustDomain string) (identity.ID, string, string) {
	switch {
	case pod == nil:
		return identity.ID{}, ReasonPodNotFound, fmt.Sprintf("pod %s/%s does not exist", pcr.Namespace, pcr.Spec.PodName)
	case pod.UID != pcr.Spec.PodUID:
		return identity.ID{}, ReasonPodNotFound, fmt.Sprintf("spec.podUID %s is not pod %s/%s's (%s): the pod was replaced", pcr.Spec.PodUID, pod.Namespace, pod.Name, pod.UID)
	case pod.Spec.NodeName != string(pcr.Spec.NodeName):
		return identity.ID{}, ReasonPodMismatch, fmt.Sprintf("spec.nodeName %s: pod %s/%s runs on node %q", pcr.Spec.NodeName, pod.Namespace, pod.Name, pod.Spec.NodeName)
	case serviceAccountOf(pod) != pcr.Spec.ServiceAccountName:
		return identity.ID{}, ReasonPodMismatch, fmt.Sprintf("spec.serviceAccountName %s: pod %s/%s runs as %q", pcr.Spec.ServiceAccountName, pod.Namespace, pod.Name, serviceAccountOf(pod))
	}
	id := identity.ID{TrustDomain: trustDomain, Namespace: pod.Namespace, ServiceAccount: pcr.Spec.ServiceAccountName}
	if err := id.Validate(); err != nil {
		return identity.ID{}, ReasonPodMismatch, err.Error()
	}
	return id, "", ""
}

func serviceAccountOf(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName == "" {
		return "default"
	}
	return pod.Spec.ServiceAccountName
}

func (r *PodCertificateSigner) decide(ctx context.Context, pcr *certificatesv1.PodCertificateRequest, condType, reason, message string) error {
	meta.SetStatusCondition(&pcr.Status.Conditions, metav1.Condition{Type: condType, Status: metav1.ConditionTrue,
		Reason: reason, Message: message, ObservedGeneration: pcr.Generation})
	if err := r.Client.Status().Update(ctx, pcr); err != nil {
		return fmt.Errorf("refusing %s/%s: %w", pcr.Namespace, pcr.Name, err)
	}
	metrics.CertificatesRefused.WithLabelValues(metrics.DeliveryPodCertificate, reason).Inc()
	if r.Events != nil {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pcr.Namespace, Name: pcr.Spec.PodName, UID: pcr.Spec.PodUID}}
		r.Events.Eventf(pod, nil, corev1.EventTypeWarning, wire.EventCertificateRefused, "Sign",
			"PodCertificateRequest %s: %s, %s: %s", pcr.Name, condType, reason, message)
	}
	return nil
}

// decided says whether a request was issued, denied or failed already.
func decided(pcr *certificatesv1.PodCertificateRequest) bool {
	for _, t := range []string{certificatesv1.PodCertificateRequestConditionTypeIssued,
		certificatesv1.PodCertificateRequestConditionTypeDenied, certificatesv1.PodCertificateRequestConditionTypeFailed} {
		if meta.IsStatusConditionTrue(pcr.Status.Conditions, t) {
			return true
		}
	}
	return false
}

func (r *PodCertificateSigner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager watches requests for weft's signer name.
func (r *PodCertificateSigner) SetupWithManager(mgr manager.Manager) error {
	mine := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pcr, ok := o.(*certificatesv1.PodCertificateRequest)
		return ok && pcr.Spec.SignerName == r.SignerName
	})
	return builder.ControllerManagedBy(mgr).
		Named("podcertificate").
		For(&certificatesv1.PodCertificateRequest{}, builder.WithPredicates(mine)).
		Complete(r)
}
