package controllers_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/identity"
)

// FuzzPodCertificateRequest: whatever a PodCertificateRequest says, the
// signer never panics, refuses with a reason unless the request names the
// live pod exactly (UID, node, service account), refuses such a request
// only for its key (no PKCS#10, or a key it cannot certify), and
// what it issues names exactly the pod's SPIFFE identity, chains to the
// root and lives no longer than the request allows and weft's bounds.
func FuzzPodCertificateRequest(f *testing.F) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	root, err := identity.NewRoot("cluster.local", now.Add(-time.Hour), 24*time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	r := &identity.Root{CA: root, Bundle: identity.EncodeCerts([][]byte{root.Cert.Raw})}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		f.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews-v1", UID: "uid-1"},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "reviews"}}
	f.Add("reviews-v1", "uid-1", "node-1", "reviews", int32(3600), csr, true)
	f.Add("reviews-v1", "uid-2", "node-1", "reviews", int32(86400), csr, true)
	f.Add("reviews-v1", "uid-1", "node-2", "reviews", int32(600), csr, true)
	f.Add("reviews-v1", "uid-1", "node-1", "default", int32(600), csr, true)
	f.Add("ratings", "uid-1", "node-1", "reviews", int32(600), csr, false)
	f.Add("reviews-v1", "uid-1", "node-1", "reviews", int32(-5), []byte("not a CSR"), true)
	f.Fuzz(func(t *testing.T, podName, podUID, node, sa string, maxSeconds int32, stub []byte, podExists bool) {
		pcr := &certificatesv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "req"},
			Spec: certificatesv1.PodCertificateRequestSpec{PodName: podName, PodUID: types.UID(podUID), NodeName: types.NodeName(node),
				ServiceAccountName: sa, MaxExpirationSeconds: &maxSeconds, StubPKCS10Request: stub}}
		live := pod
		if !podExists || podName != pod.Name {
			live = nil // the API server finds no pod of that name
		}
		chain, reason, why := controllers.Sign(pcr, live, "cluster.local", r, now)
		matches := live != nil && podUID == string(pod.UID) && node == pod.Spec.NodeName && sa == pod.Spec.ServiceAccountName
		if reason != "" {
			if chain != nil || why == "" {
				t.Fatalf("refused (%s) with a chain or without saying why: %q", reason, why)
			}
			// A request that names the pod may be refused only for its key
			// (no PKCS#10, or a key weft cannot certify).
			if matches && reason != controllers.ReasonUnsupportedKey {
				t.Fatalf("a request that names the pod was refused: %s: %s", reason, why)
			}
			return
		}
		if !matches {
			t.Fatalf("issued for a request that does not name the pod: pod %q uid %q node %q sa %q", podName, podUID, node, sa)
		}
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/reviews" ||
			len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
			t.Fatalf("the leaf names %v %v %v %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
		}
		if err := leaf.CheckSignatureFrom(root.Cert); err != nil {
			t.Fatalf("the leaf is not the root's: %v", err)
		}
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		if life > identity.MaxLeafTTL || (maxSeconds > 0 && life > time.Duration(maxSeconds)*time.Second && life > identity.MinLeafTTL+identity.ClockSkew) {
			t.Fatalf("the leaf lives %v; the request allows %ds, weft at most %v", life, maxSeconds, identity.MaxLeafTTL)
		}
		if leaf.IsCA {
			t.Fatal("the leaf is a CA")
		}
	})
}
