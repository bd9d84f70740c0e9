package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// pcrFixture is a node, a service account and a pod bound to the node.
type pcrFixture struct {
	ns        string
	node      *corev1.Node
	sa, other *corev1.ServiceAccount
	pod       *corev1.Pod
}

func newPCRFixture(ctx context.Context, t *testing.T, ns string) *pcrFixture {
	t.Helper()
	f := &pcrFixture{ns: ns}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	f.node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ns + "-node"}}
	must(env.Client.Create(ctx, f.node))
	f.sa = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client"}}
	must(env.Client.Create(ctx, f.sa))
	f.other = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other"}}
	must(env.Client.Create(ctx, f.other))
	f.pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: corev1.PodSpec{
		NodeName: f.node.Name, ServiceAccountName: "client", AutomountServiceAccountToken: ptr.To(false),
		Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	must(env.Client.Create(ctx, f.pod))
	return f
}

// request makes a PodCertificateRequest for the fixture's pod, with a key
// made here (as the kubelet makes it on the node), changed by edit.
func (f *pcrFixture) request(ctx context.Context, t *testing.T, name string, edit func(*certificatesv1.PodCertificateRequestSpec)) (*certificatesv1.PodCertificateRequest, *ecdsa.PrivateKey, error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	pcr := &certificatesv1.PodCertificateRequest{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: certificatesv1.PodCertificateRequestSpec{
			SignerName: testSigner, PodName: f.pod.Name, PodUID: f.pod.UID,
			ServiceAccountName: f.sa.Name, ServiceAccountUID: f.sa.UID,
			NodeName: types.NodeName(f.node.Name), NodeUID: f.node.UID,
			MaxExpirationSeconds: ptr.To[int32](3600), StubPKCS10Request: csr,
		}}
	if edit != nil {
		edit(&pcr.Spec)
	}
	return pcr, key, env.Client.Create(ctx, pcr)
}

// waitDecided waits until weft has issued, denied or failed a request.
func waitDecided(ctx context.Context, t *testing.T, pcr *certificatesv1.PodCertificateRequest) *metav1.Condition {
	t.Helper()
	var cond *metav1.Condition
	if err := testenv.Eventually(ctx, 60*time.Second, func(ctx context.Context) error {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pcr), pcr); err != nil {
			return err
		}
		for _, typ := range []string{certificatesv1.PodCertificateRequestConditionTypeIssued, certificatesv1.PodCertificateRequestConditionTypeDenied} {
			if c := meta.FindStatusCondition(pcr.Status.Conditions, typ); c != nil {
				cond = c
				return nil
			}
		}
		return fmt.Errorf("%s is not decided yet", pcr.Name)
	}); err != nil {
		t.Fatal(err)
	}
	return cond
}

// A request for a pod, made with the pod's node, service account and UIDs,
// is signed: one URI SAN, the pod's SPIFFE identity; the lifetime asked
// for; refresh at half-life; a chain to the mesh root.
func TestPodCertificateIssued(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f := newPCRFixture(ctx, t, "pcr-issued")
	pcr, key, err := f.request(ctx, t, "p-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := waitDecided(ctx, t, pcr); c.Type != certificatesv1.PodCertificateRequestConditionTypeIssued {
		t.Fatalf("%s %s: %s", c.Type, c.Reason, c.Message)
	}
	certs, err := identity.ParseCerts([]byte(pcr.Status.CertificateChain))
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	id, err := identity.IDOf(leaf)
	if err != nil || id.String() != "spiffe://cluster.local/ns/pcr-issued/sa/client" {
		t.Fatalf("the certificate is for %v (%v)", id, err)
	}
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("the certificate is not for the request's key")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(testBundle)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	life := pcr.Status.NotAfter.Sub(pcr.Status.NotBefore.Time)
	if life < time.Hour || life > time.Hour+2*time.Minute {
		t.Errorf("lifetime %v, want the hour asked for", life)
	}
	if !pcr.Status.BeginRefreshAt.After(pcr.Status.NotBefore.Add(29*time.Minute)) || !pcr.Status.BeginRefreshAt.Time.Before(pcr.Status.NotAfter.Time) {
		t.Errorf("refresh at %v for %v..%v", pcr.Status.BeginRefreshAt, pcr.Status.NotBefore, pcr.Status.NotAfter)
	}
}

// Requests that do not describe the pod as it is are refused with a reason,
// by the API server or by weft, and nothing is issued.
func TestPodCertificateRefused(t *testing.T) {
	// Room for up to three waits for a decision, each bounded at 60 s.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := newPCRFixture(ctx, t, "pcr-refused")
	other := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "pcr-refused-elsewhere"}}
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	denied := 0
	for name, edit := range map[string]func(*certificatesv1.PodCertificateRequestSpec){
		"another-node": func(s *certificatesv1.PodCertificateRequestSpec) {
			s.NodeName, s.NodeUID = types.NodeName(other.Name), other.UID
		},
		"another-sa": func(s *certificatesv1.PodCertificateRequestSpec) {
			s.ServiceAccountName, s.ServiceAccountUID = f.other.Name, f.other.UID
		},
		"another-pod-uid": func(s *certificatesv1.PodCertificateRequestSpec) { s.PodUID = "0000-not-the-pod" },
	} {
		pcr, _, err := f.request(ctx, t, name, edit)
		if err != nil {
			t.Logf("%s: refused by the API server: %v", name, err)
			continue
		}
		c := waitDecided(ctx, t, pcr)
		if c.Type != certificatesv1.PodCertificateRequestConditionTypeDenied || c.Reason == "" || c.Message == "" {
			t.Errorf("%s: %s %s: %s", name, c.Type, c.Reason, c.Message)
		}
		if pcr.Status.CertificateChain != "" {
			t.Errorf("%s: a certificate was issued", name)
		}
		if !strings.Contains(c.Message, f.pod.Name) {
			t.Errorf("%s: the reason does not name the pod: %s", name, c.Message)
		}
		t.Logf("%s: %s %s: %s", name, c.Type, c.Reason, c.Message)
		denied++
	}
	// Each refusal is a Warning Event on the pod, with the request and the
	// reason; the recorder folds repeats for one pod into one Event with a
	// count (its series).
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := env.Client.List(ctx, &list, client.InNamespace(f.ns)); err != nil {
			return err
		}
		n := 0
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "Pod" && ev.Regarding.Name == f.pod.Name && ev.Reason == wire.EventCertificateRefused &&
				ev.Type == corev1.EventTypeWarning && strings.HasPrefix(ev.Note, "PodCertificateRequest another-") && strings.Contains(ev.Note, ": Denied, Pod") {
				n++
				if ev.Series != nil {
					n += int(ev.Series.Count) - 1
				}
			}
		}
		if n < denied {
			return fmt.Errorf("%d CertificateRefused Events on pod %s, want %d (all: %d)", n, f.pod.Name, denied, len(list.Items))
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
