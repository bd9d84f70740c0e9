// Package kubelet plays the part of a node's kubelet that gives pods
// their certificates, for tests and the quick start, which run a real API
// server but no kubelet: it makes a key, asks for a pod certificate with a
// PodCertificateRequest, waits until the signer issues it, and writes the
// key, the chain and the root bundle that weft publishes into the pod's
// namespace where a workload's file watcher reads them.
package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// DefaultSigner is the signer name weft signs pod certificates for unless
// told another.
const DefaultSigner = "weft.dev/workload"

// Kubelet asks for the certificates of the pods bound to one node and
// writes them under Dir, a directory per pod.
type Kubelet struct {
	Client client.Client
	Node   *corev1.Node
	Dir    string
	// Signer is the requests' signer name; empty: DefaultSigner.
	Signer string
	// Lifetime is the longest lifetime asked for; zero: an hour (the
	// least the API server accepts).
	Lifetime time.Duration

	mu sync.Mutex
	n  int
}

// Issued is one certificate written for a pod.
type Issued struct {
	// Certs is where the files are.
	Certs xdstest.Certs
	// Serial is the leaf's serial number, NotAfter its expiry.
	Serial   string
	NotAfter time.Time
}

// Certify makes (or renews) a pod's certificate files. The key is written
// first: a watcher that reads a new chain with the old key keeps what it
// had until both match.
func (k *Kubelet) Certify(ctx context.Context, pod *corev1.Pod) (Issued, error) {
	k.mu.Lock()
	k.n++
	name := fmt.Sprintf("%s-%d", pod.Name, k.n)
	k.mu.Unlock()
	out := Issued{Certs: xdstest.Certs{Dir: filepath.Join(k.Dir, pod.Name)}}
	if err := os.MkdirAll(out.Certs.Dir, 0o700); err != nil {
		return out, err
	}
	var sa corev1.ServiceAccount
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: pod.Spec.ServiceAccountName}, &sa); err != nil {
		return out, fmt.Errorf("the service account of pod %s: %w", pod.Name, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return out, err
	}
	// The API server wants a proof of possession of the key: a CSR signed
	// with it, whose contents the signer ignores.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return out, err
	}
	signer, lifetime := k.Signer, k.Lifetime
	if signer == "" {
		signer = DefaultSigner
	}
	if lifetime == 0 {
		lifetime = time.Hour
	}
	pcr := &certificatesv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: name},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: signer, PodName: pod.Name, PodUID: pod.UID,
			ServiceAccountName: sa.Name, ServiceAccountUID: sa.UID,
			NodeName: types.NodeName(k.Node.Name), NodeUID: k.Node.UID,
			MaxExpirationSeconds: ptr.To(int32(lifetime / time.Second)), StubPKCS10Request: csr,
		}}
	if err := k.Client.Create(ctx, pcr); err != nil {
		return out, fmt.Errorf("requesting a certificate for %s: %w", pod.Name, err)
	}
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := k.Client.Get(ctx, client.ObjectKeyFromObject(pcr), pcr); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(pcr.Status.Conditions, certificatesv1.PodCertificateRequestConditionTypeIssued); c == nil {
			return fmt.Errorf("%s not issued: %v", name, pcr.Status.Conditions)
		}
		return nil
	}); err != nil {
		return out, err
	}
	var bundle corev1.ConfigMap
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: wire.BundleConfigMap}, &bundle); err != nil {
		return out, fmt.Errorf("the root bundle of %s: %w", pod.Namespace, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return out, err
	}
	for _, f := range []struct{ path, data string }{
		{out.Certs.Key(), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))},
		{out.Certs.Chain(), pcr.Status.CertificateChain},
		{out.Certs.Roots(), bundle.Data[wire.BundleKey]},
	} {
		if err := writeAtomic(f.path, f.data); err != nil {
			return out, err
		}
	}
	chain, err := identity.ParseCerts([]byte(pcr.Status.CertificateChain))
	if err != nil {
		return out, fmt.Errorf("the chain issued for %s: %w", pod.Name, err)
	}
	out.Serial, out.NotAfter = chain[0].SerialNumber.String(), chain[0].NotAfter
	return out, nil
}

// writeAtomic replaces a file at once: a watcher never reads half of it.
func writeAtomic(path, data string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RefreshRoots rewrites a pod's roots file from the bundle weft publishes
// in its namespace, apart from its certificate, as a kubelet refreshes a
// mounted ConfigMap (on its own schedule, about once a minute).
func (k *Kubelet) RefreshRoots(ctx context.Context, pod *corev1.Pod) error {
	var bundle corev1.ConfigMap
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: pod.Namespace, Name: wire.BundleConfigMap}, &bundle); err != nil {
		return fmt.Errorf("the root bundle of %s: %w", pod.Namespace, err)
	}
	certs := xdstest.Certs{Dir: filepath.Join(k.Dir, pod.Name)}
	return writeAtomic(certs.Roots(), bundle.Data[wire.BundleKey])
}
