package identity

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
)

// The built-in root is made once and kept in its Secret: replicas that
// start together all end up with the one root, a restart reads it back,
// and a Secret that does not hold a usable CA is refused, naming what is
// wrong.
func TestBuiltInRootInItsSecret(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}

	const replicas = 5
	roots := make([]*Root, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() {
			roots[i], errs[i] = LoadOrCreateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now())
		})
	}
	wg.Wait()
	for i := range replicas {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !roots[i].CA.Cert.Equal(roots[0].CA.Cert) {
			t.Fatalf("replica %d has another root", i)
		}
	}
	again, err := LoadOrCreateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !again.CA.Cert.Equal(roots[0].CA.Cert) {
		t.Fatal("a restart made a new root")
	}
	// The root read back signs leaves that chain to the bundle.
	chain, err := again.CA.Issue(LeafRequest{ID: reviews, PublicKey: newKey(t).Public()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := ParseCerts(again.Bundle)
	if err != nil || !bundle[0].Equal(roots[0].CA.Cert) {
		t.Fatalf("bundle: %v", err)
	}
	if err := bundle[0].CheckSignature(x509SignatureOf(t, chain[0])); err != nil {
		t.Fatalf("the leaf does not chain to the bundle: %v", err)
	}

	// Damage the Secret: the key of another CA.
	var s corev1.Secret
	if err := env.Client.Get(ctx, keyOf("weft-system"), &s); err != nil {
		t.Fatal(err)
	}
	other, err := NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, err := rootSecret("weft-system", other)
	if err != nil {
		t.Fatal(err)
	}
	s.Data[corev1.TLSPrivateKeyKey] = otherSecret.Data[corev1.TLSPrivateKeyKey]
	if err := env.Client.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now()); err == nil || !strings.Contains(err.Error(), "weft-system/weft-root-ca") || !strings.Contains(err.Error(), "not the certificate's") {
		t.Fatalf("a Secret whose key is not its certificate's: %v", err)
	}
}

func keyOf(namespace string) client.ObjectKey {
	return client.ObjectKey{Namespace: namespace, Name: RootSecretName}
}

// x509SignatureOf parses a DER leaf for CheckSignatureFrom-style checks.
func x509SignatureOf(t *testing.T, der []byte) (x509.SignatureAlgorithm, []byte, []byte) {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature
}

// Rotating the root keeps the old one trusted beside the new one, so that
// leaves of both verify; a running loader picks the rotation up and says
// so; retiring the old roots leaves only the new one, and the old leaves
// stop verifying.
func TestRootRotation(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 1)
	loader := &RootLoader{Client: env.Client, Namespace: "weft-system", TrustDomain: "cluster.local", Log: logr.Discard(),
		Reload: 100 * time.Millisecond, OnChange: func() { changed <- struct{}{} }}
	go func() { _ = loader.Start(ctx) }()
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if loader.Root() == nil {
			return errors.New("not loaded")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	old := loader.Root()
	leafOf := func(r *Root) *x509.Certificate {
		ders, err := r.CA.Issue(LeafRequest{ID: reviews, PublicKey: newKey(t).Public()}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(ders[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	verifies := func(leaf *x509.Certificate, bundle []byte) bool {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	oldLeaf := leafOf(old)

	wait := func(what string) {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatalf("the loader did not pick up %s", what)
		}
	}
	// Step 1: the new root is trusted; the old one still signs.
	rotated, err := RotateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !rotated.CA.Cert.Equal(old.CA.Cert) {
		t.Fatal("the rotation made the new root sign at once")
	}
	wait("the rotation")
	trusting := loader.Root()
	if !trusting.CA.Cert.Equal(old.CA.Cert) {
		t.Fatal("the loader signs with the new root before it was promoted")
	}
	if n := len(mustParse(t, trusting.Bundle)); n != 2 {
		t.Fatalf("%d roots trusted after the rotation, want 2", n)
	}
	if _, err := RotateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now()); err == nil || !strings.Contains(err.Error(), "weft ca promote") {
		t.Fatalf("a second rotation under way: %v, want it refused", err)
	}
	if _, err := RetireRoots(ctx, env.Client, "weft-system"); err == nil || !strings.Contains(err.Error(), "weft ca promote") {
		t.Fatalf("retiring before the new root signs: %v, want it refused", err)
	}

	// Step 2: the new root signs; leaves of both verify.
	promoted, err := PromoteRoot(ctx, env.Client, "weft-system")
	if err != nil {
		t.Fatal(err)
	}
	if promoted.CA.Cert.Equal(old.CA.Cert) {
		t.Fatal("the promotion kept the old root signing")
	}
	wait("the promotion")
	now := loader.Root()
	if !now.CA.Cert.Equal(promoted.CA.Cert) {
		t.Fatal("the loader signs with the old root")
	}
	newLeaf := leafOf(now)
	if !verifies(oldLeaf, now.Bundle) || !verifies(newLeaf, now.Bundle) {
		t.Fatal("during the rotation, leaves of both roots must verify against the bundle")
	}
	if !verifies(newLeaf, trusting.Bundle) {
		t.Fatal("a leaf of the promoted root does not verify against the bundle the proxies had before the promotion")
	}
	if _, err := PromoteRoot(ctx, env.Client, "weft-system"); err == nil {
		t.Fatal("a second promotion passed")
	}

	// Step 3.
	if _, err := RetireRoots(ctx, env.Client, "weft-system"); err != nil {
		t.Fatal(err)
	}
	wait("the retirement")
	if verifies(oldLeaf, loader.Root().Bundle) || !verifies(newLeaf, loader.Root().Bundle) {
		t.Fatal("after retiring, only leaves of the new root verify")
	}
}

func mustParse(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	certs, err := ParseCerts(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}
