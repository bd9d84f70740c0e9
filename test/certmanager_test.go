package test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
)

// cmIssuers is what a cluster admin sets up in cert-manager for weft: a
// self-signed root (cert-manager's, not weft's) and a CA Issuer signing
// with it, which the chart's Certificate weft-mesh-ca names.
const cmIssuers = `
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned, namespace: weft-system}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: mesh-root, namespace: weft-system}
spec:
  isCA: true
  commonName: cert-manager root
  secretName: mesh-root
  duration: 87600h
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: selfsigned, kind: Issuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: mesh-root, namespace: weft-system}
spec: {ca: {secretName: mesh-root}}
`

// TestCertManagerIssuesTheMeshCA runs cert-manager's own controllers (its
// pkg/controller registry, hack/tools/certmanager) against the test API
// server with its CRDs: a CA Issuer issues weft's intermediate from the
// Certificate the chart renders; weft's loader (--ca=external) signs with
// it, and certificates chain through it to cert-manager's root. A renewal
// of the intermediate, triggered as `cmctl renew` does, gives a new key
// that the loader takes without a restart, while mutual TLS between
// workloads, one handshake per request, goes on with none failed: leaves
// of the old intermediate and of the new one are accepted either side.
func TestCertManagerIssuesTheMeshCA(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join(root, "bin", "cert-manager-controller")
	helm := filepath.Join(root, "bin", "helm")
	for _, b := range []string{harness, helm} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s is missing (%v): run 'make tools'", filepath.Base(b), err)
		}
	}
	env, err := testenv.StartWith(testenv.Options{CRDDirs: []string{
		filepath.Join(root, "config", "crd", "bases"),
		filepath.Join(root, "test", "chart", "testdata", "cert-manager"),
		filepath.Join(root, "hack", "certmanager", "crds"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	// Room for cert-manager's start and the waits below (four of a minute
	// each, and more) on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "weft-system"
	for _, n := range []string{ns, "cert-manager"} {
		must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}))
	}

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(env.Kubeconfig(kubeconfig))
	startCertManager(t, harness, kubeconfig, filepath.Join(dir, "cert-manager.log"))

	// cert-manager's root and the CA Issuer on it.
	for _, o := range decodeAll(t, []byte(cmIssuers)) {
		must(c.Create(ctx, o))
	}
	must(waitReady(ctx, c, ns, "Issuer", "mesh-root"))

	// weft's controller with --ca=external waits for the Secret.
	var changes atomic.Int32
	loader := &identity.RootLoader{Client: c, Namespace: ns, TrustDomain: "cluster.local", Log: testr.New(t), External: true,
		Retry: 200 * time.Millisecond, Reload: time.Second, OnChange: func() { changes.Add(1) }}
	loaderCtx, stopLoader := context.WithCancel(ctx)
	loaderDone := make(chan error, 1)
	go func() { loaderDone <- loader.Start(loaderCtx) }()
	t.Cleanup(func() {
		stopLoader()
		if err := <-loaderDone; err != nil {
			t.Error(err)
		}
	})

	// The Certificate weft-mesh-ca as the chart renders it.
	cmd := exec.Command(helm, "template", "weft", filepath.Join(root, "charts", "weft"), "--namespace", ns,
		"--set", "mesh.ca.source=certManager,mesh.ca.issuerRef.name=mesh-root,mesh.ca.issuerRef.kind=Issuer",
		"--show-only", "templates/mesh-ca.yaml")
	cmd.Env = append(os.Environ(), "HOME="+dir, "HELM_CACHE_HOME="+filepath.Join(dir, "helm"),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "helm"), "HELM_DATA_HOME="+filepath.Join(dir, "helm"))
	rendered, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	objs := decodeAll(t, rendered)
	if len(objs) != 1 || objs[0].GetKind() != "Certificate" || objs[0].GetName() != "weft-mesh-ca" {
		t.Fatalf("the chart rendered %d objects, not the Certificate weft-mesh-ca:\n%s", len(objs), rendered)
	}
	start := time.Now()
	must(c.Create(ctx, objs[0]))
	must(waitReady(ctx, c, ns, "Certificate", "weft-mesh-ca"))
	must(testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if loader.Root() == nil {
			return errors.New("the loader has not loaded the CA")
		}
		return nil
	}))
	t.Logf("cert-manager issued the intermediate and weft loaded it %v after the Certificate was created", time.Since(start).Round(time.Millisecond))

	cmRoot := secretCerts(t, ctx, c, ns, "mesh-root", corev1.TLSCertKey)[0]
	if !bytes.Equal(cmRoot.RawIssuer, cmRoot.RawSubject) || cmRoot.CheckSignatureFrom(cmRoot) != nil {
		t.Fatalf("cert-manager's root %q is not self-signed", cmRoot.Subject)
	}
	inter1 := checkIntermediate(t, ctx, c, cmRoot)
	if !loader.Root().CA.Cert.Equal(inter1) {
		t.Fatalf("weft signs with %q, not the intermediate cert-manager issued", loader.Root().CA.Cert.Subject)
	}
	checkLeafChain(t, loader.Root(), cmRoot, inter1)
	checkSiblingRefused(t, ctx, c, loader)

	// Mutual TLS between two workloads and the controller's server, as
	// weft wires them: the server's certificate from identity.ServerTLS,
	// the workloads' leaves from the loaded CA, everyone trusting the
	// bundle (ca.crt). One workload keeps the leaf it was given before
	// the renewal; the other is given a new one whenever the CA changes.
	srv := newMTLSServer(t, loader)
	oldLeaf := issueLeaf(t, loader.Root().CA, "old")
	var fresh struct {
		sync.Mutex
		ca   *x509.Certificate
		leaf *tls.Certificate
	}
	freshLeaf := func() (*tls.Certificate, error) {
		fresh.Lock()
		defer fresh.Unlock()
		if r := loader.Root(); !r.CA.Cert.Equal(fresh.ca) {
			leaf, err := newLeaf(r.CA, "fresh")
			if err != nil {
				return nil, err
			}
			fresh.ca, fresh.leaf = r.CA.Cert, leaf
		}
		return fresh.leaf, nil
	}
	keptLeaf := func() (*tls.Certificate, error) { return oldLeaf, nil }
	traffic := startTraffic(t, loader, srv.addr, map[string]func() (*tls.Certificate, error){"old": keptLeaf, "fresh": freshLeaf})
	time.Sleep(time.Second)

	// Renew the intermediate as `cmctl renew` does: the condition
	// Issuing=True, reason ManuallyTriggered, through the status.
	var cert unstructured.Unstructured
	cert.SetAPIVersion("cert-manager.io/v1")
	cert.SetKind("Certificate")
	// Retried for about 10 s: cert-manager writes the status too, and on a
	// loaded machine outlasts retry.DefaultRetry's five tries 10 ms apart.
	renewBackoff := wait.Backoff{Steps: 10, Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Cap: 2 * time.Second}
	must(retry.RetryOnConflict(renewBackoff, func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-mesh-ca"}, &cert); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(cert.Object, "status", "conditions")
		conds = append(conds, map[string]any{"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
			"message": "Certificate re-issuance manually triggered", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
			"observedGeneration": cert.GetGeneration()})
		if err := unstructured.SetNestedSlice(cert.Object, conds, "status", "conditions"); err != nil {
			return err
		}
		return c.Status().Update(ctx, &cert)
	}))
	renewStart := time.Now()
	before := traffic.total()

	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if r := loader.Root(); r.CA.Cert.Equal(inter1) {
			return errors.New("the loader still signs with the first intermediate")
		}
		if changes.Load() == 0 {
			return errors.New("OnChange was not called")
		}
		return nil
	}))
	t.Logf("the renewed intermediate was taken %v after the renewal was triggered", time.Since(renewStart).Round(time.Millisecond))
	must(waitReady(ctx, c, ns, "Certificate", "weft-mesh-ca"))
	must(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "weft-mesh-ca"}, &cert))
	if rev, _, _ := unstructured.NestedInt64(cert.Object, "status", "revision"); rev != 2 {
		t.Errorf("the Certificate's revision is %d after one renewal, want 2", rev)
	}
	inter2 := checkIntermediate(t, ctx, c, cmRoot)
	// Issued through cert-manager's CertificateRequests, which its
	// approver approved.
	var crs unstructured.UnstructuredList
	crs.SetAPIVersion("cert-manager.io/v1")
	crs.SetKind("CertificateRequestList")
	must(c.List(ctx, &crs, client.InNamespace(ns)))
	approved := 0
	for _, cr := range crs.Items {
		if len(cr.GetOwnerReferences()) == 0 || cr.GetOwnerReferences()[0].Name != "weft-mesh-ca" ||
			cr.GetAnnotations()["cert-manager.io/certificate-revision"] != "2" {
			continue
		}
		conds, _, _ := unstructured.NestedSlice(cr.Object, "status", "conditions")
		for _, raw := range conds {
			if cond, _ := raw.(map[string]any); cond["type"] == "Approved" && cond["status"] == "True" && cond["reason"] == "cert-manager.io" {
				approved++
			}
		}
	}
	if approved != 1 {
		t.Errorf("%d CertificateRequests of weft-mesh-ca's revision 2 approved by cert-manager's approver, want 1", approved)
	}
	if !loader.Root().CA.Cert.Equal(inter2) {
		t.Fatalf("weft signs with %q (serial %x), not the renewed intermediate (serial %x)",
			loader.Root().CA.Cert.Subject, loader.Root().CA.Cert.SerialNumber, inter2.SerialNumber)
	}
	if inter2.PublicKey.(*ecdsa.PublicKey).Equal(inter1.PublicKey) {
		t.Error("the renewed intermediate kept its key despite rotationPolicy Always")
	}
	checkLeafChain(t, loader.Root(), cmRoot, inter2)
	// Both intermediates are trust anchors now, the renewed one first,
	// and the anchors' ConfigMap keeps the replaced one for a restart.
	if got, _ := identity.ParseCerts(loader.Bundle()); len(got) != 2 || !got[0].Equal(inter2) || !got[1].Equal(inter1) {
		t.Errorf("after the renewal the bundle holds %d certificates, want the renewed and the replaced intermediate", len(got))
	}
	var anchors corev1.ConfigMap
	must(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: identity.AnchorsConfigMap}, &anchors))
	if kept, err := identity.ParseCerts([]byte(anchors.Data[identity.BundleKey])); err != nil || len(kept) != 2 || !kept[1].Equal(inter1) {
		t.Errorf("the anchors' ConfigMap does not keep the replaced intermediate (%d certificates, %v)", len(kept), err)
	}

	// A replica started after the renewal serves a certificate of the
	// new intermediate; the workload with the old leaf reaches it too.
	srv2 := newMTLSServer(t, loader)
	for name, get := range map[string]func() (*tls.Certificate, error){"old": keptLeaf, "fresh": freshLeaf} {
		issuer, err := call(loader, srv2.addr, get)
		if err != nil {
			t.Errorf("workload %s to a replica started after the renewal: %v", name, err)
		} else if !issuer.Equal(inter2) {
			t.Errorf("the new replica serves a certificate of %q (serial %x), not of the renewed intermediate", issuer.Subject, issuer.SerialNumber)
		}
	}
	must(testenv.Eventually(ctx, 60*time.Second, func(context.Context) error {
		if traffic.total()-before < 200 {
			return errors.New("too few requests since the renewal")
		}
		return nil
	}))
	traffic.stop()

	ok, failed, firstErr := traffic.results()
	t.Logf("mutual TLS: %d requests (a handshake each), %d since the renewal, %d failed", ok+failed, ok+failed-before, failed)
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the renewal; the first: %v", failed, ok+failed, firstErr)
	}
	// The server saw leaves of both intermediates after the renewal.
	for _, inter := range []*x509.Certificate{inter1, inter2} {
		if srv.seenAfter(inter.SubjectKeyId, renewStart) == 0 {
			t.Errorf("no client leaf of %x (serial %x) reached the server after the renewal", inter.SubjectKeyId, inter.SerialNumber)
		}
	}
}

// startCertManager runs the harness until the test ends (SIGTERM), its
// log in logPath, shown when the test fails.
func startCertManager(t *testing.T, harness, kubeconfig, logPath string) {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(harness, "--kubeconfig", kubeconfig, "--namespace", "cert-manager")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("cert-manager's controllers exited after SIGTERM: %v", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited //nolint:errcheck // killed: its exit status says nothing more
			t.Error("cert-manager's controllers did not stop within 30 s of SIGTERM")
		}
		_ = logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("cert-manager's log (the end):\n%s", b)
		}
	})
}

func decodeAll(t *testing.T, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var m map[string]any
		if err := d.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// waitReady waits for cert-manager to set the condition Ready=True on an
// Issuer or a Certificate of the generation in the spec.
func waitReady(ctx context.Context, c client.Client, ns, kind, name string) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var u unstructured.Unstructured
		u.SetAPIVersion("cert-manager.io/v1")
		u.SetKind(kind)
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &u); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		var states []string
		ready := false
		for _, raw := range conds {
			cond, _ := raw.(map[string]any)
			states = append(states, fmt.Sprintf("%v=%v (%v: %v)", cond["type"], cond["status"], cond["reason"], cond["message"]))
			if cond["type"] == "Ready" && cond["status"] == "True" {
				ready = true
			}
			if cond["type"] == "Issuing" && cond["status"] == "True" {
				ready = false // a renewal in progress
			}
		}
		if !ready {
			return fmt.Errorf("%s %s/%s is not ready: %s", kind, ns, name, strings.Join(states, "; "))
		}
		return nil
	})
}

func secretCerts(t *testing.T, ctx context.Context, c client.Client, ns, name, key string) []*x509.Certificate {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCerts(s.Data[key])
	if err != nil {
		t.Fatalf("Secret %s/%s, key %s: %v", ns, name, key, err)
	}
	return certs
}

// checkIntermediate reads weft-root-ca as cert-manager wrote it and checks
// it is the Certificate the chart asks for, signed by cert-manager's root,
// with the root alone in ca.crt and the key PKCS #8.
func checkIntermediate(t *testing.T, ctx context.Context, c client.Client, cmRoot *x509.Certificate) *x509.Certificate {
	t.Helper()
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: identity.RootSecretName}, &s); err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	inter := certs[0]
	if err := inter.CheckSignatureFrom(cmRoot); err != nil {
		t.Errorf("the intermediate is not signed by cert-manager's root: %v", err)
	}
	if !inter.IsCA || inter.Subject.CommonName != "weft intermediate cluster.local" ||
		len(inter.URIs) != 1 || inter.URIs[0].String() != "spiffe://cluster.local" ||
		inter.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("the intermediate is not what the chart asks for: CA %v, CN %q, URIs %v, key usage %b",
			inter.IsCA, inter.Subject.CommonName, inter.URIs, inter.KeyUsage)
	}
	if pub, ok := inter.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("the intermediate's key is %T, not ECDSA P-256", inter.PublicKey)
	}
	if b, _ := pem.Decode(s.Data[corev1.TLSPrivateKeyKey]); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("tls.key is not PKCS #8 PEM")
	}
	bundle, err := identity.ParseCerts(s.Data[identity.BundleKey])
	if err != nil || len(bundle) != 1 || !bundle[0].Equal(cmRoot) {
		t.Errorf("ca.crt is not cert-manager's root alone (%d certificates, %v)", len(bundle), err)
	}
	return inter
}

// checkLeafChain issues a workload leaf and checks the path the verifier
// builds against the bundle weft publishes: the leaf and the intermediate,
// its trust anchor. cert-manager's root is not in the bundle: the mesh
// trusts identities only through its own intermediate.
func checkLeafChain(t *testing.T, r *identity.Root, cmRoot, inter *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := r.CA.Issue(identity.LeafRequest{ID: identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "reviews"},
		PublicKey: key.Public()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := identity.ParseCerts(r.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, b := range bundle {
		if b.Equal(cmRoot) {
			t.Error("cert-manager's root is in the mesh's bundle")
		}
		roots.AddCert(b)
	}
	for _, der := range chain[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inters.AddCert(c)
	}
	paths, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatalf("the leaf does not chain to the bundle: %v", err)
	}
	for _, p := range paths {
		if len(p) != 2 || !p[1].Equal(inter) {
			var names []string
			for _, c := range p {
				names = append(names, c.Subject.CommonName)
			}
			t.Errorf("the leaf's path is %q, not leaf → weft's intermediate", names)
		}
	}
}

// otherTeamCA is another intermediate that cert-manager's CA Issuer signs
// from the same root: not the mesh's.
const otherTeamCA = `
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: other-team-ca, namespace: weft-system}
spec:
  isCA: true
  commonName: another team's CA
  secretName: other-team-ca
  duration: 2160h
  privateKey: {algorithm: ECDSA, size: 256, encoding: PKCS8}
  issuerRef: {name: mesh-root, kind: Issuer, group: cert-manager.io}
`

// checkSiblingRefused: a leaf naming a mesh identity, signed by another
// intermediate of cert-manager's root, is refused by the mesh's bundle
// and by a server that weft's identity code sets up, while the mesh's own
// leaves are let in.
func checkSiblingRefused(t *testing.T, ctx context.Context, c client.Client, loader *identity.RootLoader) {
	t.Helper()
	for _, o := range decodeAll(t, []byte(otherTeamCA)) {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitReady(ctx, c, "weft-system", "Certificate", "other-team-ca"); err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "weft-system", Name: "other-team-ca"}, &s); err != nil {
		t.Fatal(err)
	}
	certs, err := identity.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(s.Data[corev1.TLSPrivateKeyKey])
	if b == nil {
		t.Fatal("other-team-ca has no key")
	}
	key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sibling := &identity.CA{Cert: certs[0], Key: key.(crypto.Signer), Chain: [][]byte{certs[0].Raw}}
	for _, ca := range certs[1:] {
		sibling.Chain = append(sibling.Chain, ca.Raw)
	}
	foreign := issueLeaf(t, sibling, "reviews")
	srv := newMTLSServer(t, loader)
	if _, err := call(loader, srv.addr, func() (*tls.Certificate, error) { return foreign, nil }); err == nil {
		t.Error("a leaf of another intermediate of cert-manager's root was let in")
	}
	if _, err := call(loader, srv.addr, func() (*tls.Certificate, error) { return issueLeaf(t, loader.Root().CA, "reviews"), nil }); err != nil {
		t.Errorf("a leaf of weft's intermediate was refused: %v", err)
	}
}

func issueLeaf(t *testing.T, ca *identity.CA, sa string) *tls.Certificate {
	t.Helper()
	c, err := newLeaf(ca, sa)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newLeaf issues a workload's leaf (shop/<sa>) from ca, as SDS does.
func newLeaf(ca *identity.CA, sa string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	chain, err := ca.Issue(identity.LeafRequest{ID: identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa},
		PublicKey: key.Public()}, time.Now())
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}, nil
}

const controllerHost = "weft-controller.weft-system.svc"

func bundlePool(loader *identity.RootLoader) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(loader.Bundle())
	return p
}

// mtlsServer serves with identity.ServerTLS, requires a client
// certificate that chains to the bundle, and answers with the caller's
// SPIFFE ID; it notes which intermediate signed each caller's leaf.
type mtlsServer struct {
	addr string
	mu   sync.Mutex
	seen map[string][]time.Time // by the leaf's AuthorityKeyId
}

func newMTLSServer(t *testing.T, loader *identity.RootLoader) *mtlsServer {
	t.Helper()
	s := &mtlsServer{seen: map[string][]time.Time{}}
	base := identity.ServerTLS(loader.Root, []string{controllerHost},
		identity.ID{TrustDomain: "cluster.local", Namespace: "weft-system", ServiceAccount: "weft-controller"})
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, bundlePool(loader)
		return c, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaf := r.TLS.PeerCertificates[0]
		id, err := identity.IDOf(leaf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		s.mu.Lock()
		k := hex.EncodeToString(leaf.AuthorityKeyId)
		s.seen[k] = append(s.seen[k], time.Now())
		s.mu.Unlock()
		_, _ = io.WriteString(w, id.String())
	})}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close() })
	s.addr = ln.Addr().String()
	return s
}

func (s *mtlsServer) seenAfter(ski []byte, after time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, at := range s.seen[hex.EncodeToString(ski)] {
		if at.After(after) {
			n++
		}
	}
	return n
}

// call makes one request on a new connection (a full handshake) with the
// given client certificate, checking the server's against the bundle, and
// returns the CA that signed the server's certificate.
func call(loader *identity.RootLoader, addr string, getCert func() (*tls.Certificate, error)) (*x509.Certificate, error) {
	cert, err := getCert()
	if err != nil {
		return nil, err
	}
	var served []*x509.Certificate
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, ServerName: controllerHost, RootCAs: bundlePool(loader),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		VerifyConnection:     func(cs tls.ConnectionState) error { served = cs.PeerCertificates; return nil },
	}}
	defer tr.CloseIdleConnections()
	// A generous deadline: a handshake can be slow on a loaded machine,
	// and a slow request is not a failed one.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if want := cert.Leaf.URIs[0].String(); string(body) != want {
		return nil, fmt.Errorf("the server saw %q, not %q", body, want)
	}
	if len(served) < 2 {
		return nil, errors.New("the server sent no intermediate")
	}
	return served[1], nil
}

type mtlsTraffic struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	done       chan struct{}
	wg         sync.WaitGroup
}

// startTraffic sends requests from each workload, one after the other,
// until stop.
func startTraffic(t *testing.T, loader *identity.RootLoader, addr string, workloads map[string]func() (*tls.Certificate, error)) *mtlsTraffic {
	tr := &mtlsTraffic{done: make(chan struct{})}
	for name, cert := range workloads {
		tr.wg.Go(func() {
			for {
				select {
				case <-tr.done:
					return
				case <-time.After(2 * time.Millisecond):
				}
				if _, err := call(loader, addr, cert); err != nil {
					tr.failed.Add(1)
					tr.mu.Lock()
					if tr.firstErr == nil {
						tr.firstErr = fmt.Errorf("workload %s: %w", name, err)
					}
					tr.mu.Unlock()
				} else {
					tr.ok.Add(1)
				}
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *mtlsTraffic) total() int64 { return tr.ok.Load() + tr.failed.Load() }

func (tr *mtlsTraffic) stop() {
	select {
	case <-tr.done:
	default:
		close(tr.done)
	}
	tr.wg.Wait()
}

func (tr *mtlsTraffic) results() (ok, failed int64, firstErr error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.ok.Load(), tr.failed.Load(), tr.firstErr
}
