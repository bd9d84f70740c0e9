package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

// intermediate signs a CA certificate below root, as cert-manager's CA
// issuer does, and returns it with its key as SEC 1 PEM (cert-manager's
// default encoding for ECDSA).
func intermediate(t *testing.T, root *CA, name string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := newSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
}

// TestExternalIntermediate: with an external CA (cert-manager's
// Certificate, or the user's), the loader waits for the Secret and never
// makes one; it signs with the intermediate found there (tls.crt without
// its issuer, a SEC 1 key, the root in ca.crt), leaves chain through it to
// the root, and a renewed intermediate is taken without a restart. A CA
// that does not chain to the bundle is refused, naming the key.
func TestExternalIntermediate(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := "weft-ext"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	var changes atomic.Int32
	// Events through the API server's events.k8s.io API, as the manager's
	// recorder sends them.
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: kubernetes.NewForConfigOrDie(env.Config).EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	defer broadcaster.Shutdown()
	l := &RootLoader{Client: env.Client, Namespace: ns, TrustDomain: "cluster.local", Log: testr.New(t), External: true,
		Retry: 100 * time.Millisecond, Reload: 200 * time.Millisecond, OnChange: func() { changes.Add(1) },
		Events: broadcaster.NewRecorder(env.Scheme, "weft-controller")}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// Waiting, it makes nothing.
	time.Sleep(time.Second)
	if l.Root() != nil {
		t.Fatal("a root was loaded before the external CA's Secret existed")
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: RootSecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the loader made the CA Secret itself (%v)", err)
	}

	root, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	inter, keyPEM := intermediate(t, root, "weft intermediate 1")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: RootSecretName}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       EncodeCerts([][]byte{inter.Raw}),
			corev1.TLSPrivateKeyKey: keyPEM,
			BundleKey:               EncodeCerts([][]byte{root.Cert.Raw}),
		}}
	if err := env.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if l.Root() == nil {
			return context.DeadlineExceeded
		}
		return nil
	}); err != nil {
		t.Fatal("the external CA was not loaded")
	}
	leafChainsThrough(t, l.Root(), root, inter)

	// The mesh trusts the intermediate, not the root above it: a leaf of
	// the mesh's trust domain that another intermediate of the same root
	// signed is refused.
	if got := l.Root().Bundle; !sameCerts(t, got, inter) {
		t.Errorf("the bundle is not the intermediate alone:\n%s", got)
	}
	if !sameCerts(t, l.Root().ExternalRoots, root.Cert) {
		t.Errorf("the external roots are not the Secret's ca.crt")
	}
	sibling, siblingKey := intermediate(t, root, "another team's intermediate")
	siblingCA := &CA{Cert: sibling, Key: parseTestKey(t, siblingKey), Chain: [][]byte{sibling.Raw, root.Cert.Raw}}
	foreign := issueChain(t, siblingCA)
	if err := verifyAgainst(l.Root().Bundle, foreign); err == nil {
		t.Error("a leaf of a sibling intermediate of the external root is trusted")
	}
	oldLeaf := issueChain(t, l.Root().CA)
	if err := verifyAgainst(l.Root().Bundle, oldLeaf); err != nil {
		t.Errorf("a leaf of the signing intermediate is not trusted: %v", err)
	}

	// cert-manager renews the intermediate: the loader takes it.
	renewed, renewedKey := intermediate(t, root, "weft intermediate 2")
	secret.Data[corev1.TLSCertKey], secret.Data[corev1.TLSPrivateKeyKey] = EncodeCerts([][]byte{renewed.Raw, root.Cert.Raw}), renewedKey
	if err := env.Client.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if !l.Root().CA.Cert.Equal(renewed) || changes.Load() == 0 {
			return context.DeadlineExceeded
		}
		return nil
	}); err != nil {
		t.Fatal("the renewed intermediate was not taken")
	}
	leafChainsThrough(t, l.Root(), root, renewed)

	// The new signing CA is an Event on the Secret.
	if err := testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "Secret" && ev.Regarding.Name == RootSecretName && ev.Reason == wire.EventCATaken &&
				strings.Contains(ev.Note, `"weft intermediate 2"`) {
				return nil
			}
		}
		return fmt.Errorf("no CATaken Event on the Secret among %d", len(list.Items))
	}); err != nil {
		t.Error(err)
	}

	// The replaced intermediate stays trusted while its leaves may live,
	// and is kept in the anchors' ConfigMap: a controller that starts now
	// trusts it too.
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if !sameCerts(t, l.Root().Bundle, renewed, inter) {
			return context.DeadlineExceeded
		}
		return nil
	}); err != nil {
		t.Fatalf("the bundle after the renewal is not the renewed and the replaced intermediates:\n%s", l.Root().Bundle)
	}
	if err := verifyAgainst(l.Root().Bundle, oldLeaf); err != nil {
		t.Errorf("a leaf of the replaced intermediate is refused after the renewal: %v", err)
	}
	// It lives a day, less than AnchorRetention: trusted until it expires.
	if until := l.Root().Anchors[1].Until; !until.Equal(inter.NotAfter) {
		t.Errorf("the replaced intermediate is trusted until %v, want its expiry %v", until, inter.NotAfter)
	}
	restarted := &RootLoader{Client: env.Client, Namespace: ns, Log: testr.New(t), External: true}
	r2, err := restarted.load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(t, r2.Bundle, renewed, inter) || !r2.Anchors[1].Until.Equal(l.Root().Anchors[1].Until) {
		t.Errorf("a restarted loader's anchors: %v, want the renewed intermediate and the replaced one until %v", r2.Anchors, l.Root().Anchors[1].Until)
	}

	// weft does not rotate or retire what it did not make.
	if _, err := RotateRoot(ctx, env.Client, ns, "cluster.local", time.Now()); err == nil || !strings.Contains(err.Error(), "not weft's built-in root") {
		t.Errorf("rotating an external CA: %v", err)
	}
	if _, err := RetireRoots(ctx, env.Client, ns); err == nil {
		t.Error("retiring the roots of an external CA was allowed")
	}

	// A CA that does not chain to the bundle.
	other, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stray, strayKey := intermediate(t, other, "stray")
	bad := secret.DeepCopy()
	bad.Data[corev1.TLSCertKey], bad.Data[corev1.TLSPrivateKeyKey] = EncodeCerts([][]byte{stray.Raw}), strayKey
	if _, err := rootFromSecret(bad); err == nil || !strings.Contains(err.Error(), BundleKey) {
		t.Errorf("a CA outside the bundle: %v", err)
	}
}

// sameCerts says whether a PEM bundle holds exactly want, in order.
func sameCerts(t *testing.T, bundle []byte, want ...*x509.Certificate) bool {
	t.Helper()
	got, err := ParseCerts(bundle)
	if err != nil {
		return false
	}
	return len(got) == len(want) && func() bool {
		for i := range got {
			if !got[i].Equal(want[i]) {
				return false
			}
		}
		return true
	}()
}

func parseTestKey(t *testing.T, keyPEM []byte) crypto.Signer {
	t.Helper()
	k, err := parseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issueChain issues a leaf of the mesh's trust domain from ca and returns
// its chain.
func issueChain(t *testing.T, ca *CA) [][]byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Issue(LeafRequest{ID: ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}, PublicKey: key.Public()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// verifyAgainst checks a chain as a peer would: the leaf, through the
// certificates sent with it, to an anchor of the bundle.
func verifyAgainst(bundle []byte, chain [][]byte) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	inters := x509.NewCertPool()
	var leaf *x509.Certificate
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		if i == 0 {
			leaf = c
		} else {
			inters.AddCert(c)
		}
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func leafChainsThrough(t *testing.T, r *Root, root *CA, inter *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"}
	chain, err := r.CA.Issue(LeafRequest{ID: id, PublicKey: key.Public()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("the leaf is not the intermediate's: %v", err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Cert)
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the leaf's chain does not reach the root: %v", err)
	}
}
