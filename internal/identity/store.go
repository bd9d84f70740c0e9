package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The built-in root lives in one Secret in the mesh namespace, which only
// the controller may read: the CA's certificate and key, and the bundle of
// roots the mesh trusts (the current one, and earlier ones while leaves
// they signed are still about).
const (
	RootSecretName = "weft-root-ca"
	// BundleKey holds the trusted roots, PEM.
	BundleKey = "ca.crt"
	// NextCertKey and NextKeyKey hold a rotation's new root while it is
	// trusted but does not sign yet (RotateRoot, then PromoteRoot).
	NextCertKey = "next.crt"
	NextKeyKey  = "next.key"
	// DefaultRootTTL is a new built-in root's lifetime.
	DefaultRootTTL = 10 * 365 * 24 * time.Hour
)

// Root is the CA weft signs with and the bundle of roots the mesh trusts.
type Root struct {
	CA *CA
	// Bundle is what peers are checked against, PEM: the built-in roots;
	// with an external CA, the trust anchors (the signing CA and the ones
	// it replaced while their leaves may live), not the external roots.
	Bundle []byte
	// With an external CA: Anchors are Bundle's certificates with how
	// long each is trusted, ExternalRoots the Secret's own bundle (the
	// roots the signing CA chains to). Nil with the built-in root.
	Anchors       []Anchor
	ExternalRoots []byte
}

// LoadRoot returns the CA from its Secret in namespace, which someone else
// made (cert-manager, or the user); it never makes one.
func LoadRoot(ctx context.Context, c client.Client, namespace string) (*Root, error) {
	key := client.ObjectKey{Namespace: namespace, Name: RootSecretName}
	var s corev1.Secret
	if err := c.Get(ctx, key, &s); err != nil {
		return nil, fmt.Errorf("reading the CA Secret %s: %w", key, err)
	}
	return rootFromSecret(&s)
}

// LoadOrCreateRoot returns the built-in root from its Secret in namespace,
// making a new root and the Secret when there is none. Replicas that start
// together agree on one root: whoever creates the Secret second reads the
// first one's.
func LoadOrCreateRoot(ctx context.Context, c client.Client, namespace, trustDomain string, now time.Time) (*Root, error) {
	key := client.ObjectKey{Namespace: namespace, Name: RootSecretName}
	var s corev1.Secret
	err := c.Get(ctx, key, &s)
	if err == nil {
		return rootFromSecret(&s)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the root CA Secret %s: %w", key, err)
	}
	ca, err := NewRoot(trustDomain, now, DefaultRootTTL)
	if err != nil {
		return nil, err
	}
	s, err = rootSecret(namespace, ca)
	if err != nil {
		return nil, err
	}
	if err := c.Create(ctx, &s); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating the root CA Secret %s: %w", key, err)
		}
		if err := c.Get(ctx, key, &s); err != nil {
			return nil, fmt.Errorf("reading the root CA Secret %s that another replica created: %w", key, err)
		}
	}
	return rootFromSecret(&s)
}

func rootSecret(namespace string, ca *CA) (corev1.Secret, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return corev1.Secret{}, fmt.Errorf("encoding the root's key: %w", err)
	}
	certPEM := EncodeCerts(ca.Chain[:1])
	return corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: RootSecretName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "weft"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       certPEM,
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
			BundleKey:               certPEM,
		},
	}, nil
}

// rootFromSecret reads the CA and the bundle, and checks that the key is
// the certificate's and the certificate is in the bundle.
func rootFromSecret(s *corev1.Secret) (*Root, error) {
	where := fmt.Sprintf("the root CA Secret %s/%s", s.Namespace, s.Name)
	certs, err := ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, fmt.Errorf("%s, key %s: %w", where, corev1.TLSCertKey, err)
	}
	signer, err := parseKey(s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("%s, key %s: %w", where, corev1.TLSPrivateKeyKey, err)
	}
	cert := certs[0]
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("%s: the private key is not the certificate's", where)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: the certificate is not a CA", where)
	}
	bundle, err := ParseCerts(s.Data[BundleKey])
	if err != nil {
		return nil, fmt.Errorf("%s, key %s: %w", where, BundleKey, err)
	}
	// tls.crt holds the CA and any certificates above it (cert-manager
	// writes an intermediate with or without its issuer): the CA must
	// chain to a root of the bundle.
	if !containsCert(bundle, certs[len(certs)-1]) && !chainsTo(certs, bundle) {
		return nil, errors.New(where + ": the CA does not chain to a root of the bundle (" + BundleKey + ")")
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return &Root{CA: &CA{Cert: cert, Key: signer, Chain: chain}, Bundle: s.Data[BundleKey]}, nil
}

// builtIn refuses to rotate a CA that weft did not make: cert-manager's
// intermediate, or the user's, is renewed where it is managed.
func builtIn(s *corev1.Secret) error {
	if s.Labels["app.kubernetes.io/managed-by"] != "weft" {
		return fmt.Errorf("the CA Secret %s/%s is not weft's built-in root (no label app.kubernetes.io/managed-by=weft): renew or rotate it where it is managed (cert-manager, or by hand)", s.Namespace, s.Name)
	}
	return nil
}

// parseKey reads a PEM private key as PKCS #8, SEC 1 (EC PRIVATE KEY) or
// PKCS #1 (RSA PRIVATE KEY), the encodings cert-manager can write.
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	var parsed any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	return signer, nil
}

// chainsTo says whether certs[0], with certs[1:] as intermediates, chains
// to one of roots (at a moment when every certificate of the chain is
// valid: expiry is not this check's business).
func chainsTo(certs, roots []*x509.Certificate) bool {
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	at := certs[0].NotBefore
	for _, c := range certs[1:] {
		inter.AddCert(c)
		if c.NotBefore.After(at) {
			at = c.NotBefore
		}
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: at.Add(time.Second),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// A rotation of the built-in root has three steps, so that no workload is
// ever shown a leaf it cannot verify:
//
//  1. RotateRoot makes a new root and adds it to the trusted bundle; the
//     old root goes on signing. Every proxy and every namespace's bundle
//     comes to trust both (phase TrustingBoth).
//  2. PromoteRoot makes the new root sign: every leaf renewed from then on
//     is the new root's, and every peer already trusts it (SigningWithNew).
//  3. RetireRoots drops the old roots once no leaf of theirs is in use
//     (Steady).
//
// Signing with a new root at once, in one step, would show a renewed leaf
// to peers that had not received the new bundle yet (a sidecar a moment
// behind on SDS, a pod whose kubelet refreshes its mounted bundle once a
// minute), and their handshakes would fail.

// RotateRoot makes a new root and trusts it beside the old ones, which go
// on signing until PromoteRoot. It refuses while a rotation is under way.
func RotateRoot(ctx context.Context, c client.Client, namespace, trustDomain string, now time.Time) (*Root, error) {
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: RootSecretName}, &s); err != nil {
		return nil, fmt.Errorf("reading the root CA Secret: %w", err)
	}
	if err := builtIn(&s); err != nil {
		return nil, err
	}
	if len(s.Data[NextCertKey]) > 0 {
		return nil, errors.New("a new root is trusted already and waits to sign: run weft ca promote, then weft ca retire")
	}
	old, err := rootFromSecret(&s)
	if err != nil {
		return nil, err
	}
	if len(old.Bundle) > 0 {
		if trusted, err := ParseCerts(old.Bundle); err == nil && len(trusted) > 1 {
			return nil, errors.New("old roots are still trusted: run weft ca retire once no leaf of theirs is in use, then rotate")
		}
	}
	ca, err := NewRoot(trustDomain, now, DefaultRootTTL)
	if err != nil {
		return nil, err
	}
	next, err := rootSecret(namespace, ca)
	if err != nil {
		return nil, err
	}
	trusted, err := ParseCerts(old.Bundle)
	if err != nil {
		return nil, err
	}
	var keep [][]byte
	for _, t := range trusted {
		if now.Before(t.NotAfter) {
			keep = append(keep, t.Raw)
		}
	}
	s.Data[NextCertKey] = next.Data[corev1.TLSCertKey]
	s.Data[NextKeyKey] = next.Data[corev1.TLSPrivateKeyKey]
	s.Data[BundleKey] = EncodeCerts(append(keep, ca.Chain[0]))
	if err := c.Update(ctx, &s); err != nil {
		return nil, fmt.Errorf("writing the new root: %w", err)
	}
	return rootFromSecret(&s)
}

// PromoteRoot makes the root RotateRoot added sign. The old roots stay
// trusted until RetireRoots.
func PromoteRoot(ctx context.Context, c client.Client, namespace string) (*Root, error) {
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: RootSecretName}, &s); err != nil {
		return nil, fmt.Errorf("reading the root CA Secret: %w", err)
	}
	if err := builtIn(&s); err != nil {
		return nil, err
	}
	if len(s.Data[NextCertKey]) == 0 {
		return nil, errors.New("no new root waits to sign: run weft ca rotate first")
	}
	promoted := s.DeepCopy()
	promoted.Data[corev1.TLSCertKey], promoted.Data[corev1.TLSPrivateKeyKey] = s.Data[NextCertKey], s.Data[NextKeyKey]
	delete(promoted.Data, NextCertKey)
	delete(promoted.Data, NextKeyKey)
	// What it will serve must load: the key is the certificate's, and the
	// bundle trusts it.
	root, err := rootFromSecret(promoted)
	if err != nil {
		return nil, err
	}
	if err := c.Update(ctx, promoted); err != nil {
		return nil, fmt.Errorf("writing the promoted root: %w", err)
	}
	return root, nil
}

// RetireRoots drops every root but the current one from the trusted
// bundle: leaves signed by the old roots stop verifying.
func RetireRoots(ctx context.Context, c client.Client, namespace string) (*Root, error) {
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: RootSecretName}, &s); err != nil {
		return nil, fmt.Errorf("reading the root CA Secret: %w", err)
	}
	if err := builtIn(&s); err != nil {
		return nil, err
	}
	if len(s.Data[NextCertKey]) > 0 {
		return nil, errors.New("the new root does not sign yet, and retiring the others would leave no root that signs trusted: run weft ca promote, wait until every leaf was renewed, then retire")
	}
	certs, err := ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, err
	}
	s.Data[BundleKey] = EncodeCerts([][]byte{certs[len(certs)-1].Raw})
	if err := c.Update(ctx, &s); err != nil {
		return nil, fmt.Errorf("writing the bundle: %w", err)
	}
	return rootFromSecret(&s)
}
