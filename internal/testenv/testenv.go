// Package testenv starts a real kube-apiserver and etcd, built by
// hack/build-tools.sh into bin/, with weft's CRDs installed. Tests use it
// through envtest; nothing here fakes what an API server does.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
)

// K8sVersion is the Kubernetes version whose binaries the tests run.
const K8sVersion = "v1.37.2"

// Env is a running control plane.
type Env struct {
	// Root is the repository's root directory.
	Root string
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a live client (no cache) with weft's kinds registered.
	Client client.Client
	// Scheme has the built-in kinds and weft's.
	Scheme *runtime.Scheme

	env *envtest.Environment
}

// Scheme returns a scheme with the built-in kinds and weft's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	return s
}

// Root finds the repository's root: the nearest directory above the
// working directory whose go.mod declares weft's module.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/weftmesh/weft\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/weftmesh/weft above the working directory")
		}
		dir = parent
	}
}

// AssetsDir returns the directory holding kube-apiserver, etcd and kubectl:
// $KUBEBUILDER_ASSETS, or bin/k8s/<version> under the root. It fails when a
// binary is missing, saying how to build it.
func AssetsDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(root, "bin", "k8s", K8sVersion)
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s is missing from %s: run 'make tools' (or 'make test', which builds it)", b, dir)
		}
	}
	return dir, nil
}

// Start starts etcd and kube-apiserver with weft's CRDs installed.
func Start() (*Env, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	return StartWithCRDs(filepath.Join(root, "config", "crd", "bases"))
}

// ForTest starts a control plane for one test, stopped when the test ends;
// the test fails when it cannot start.
func ForTest(t testing.TB) *Env {
	t.Helper()
	env, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
	return env
}

// StartWithCRDs starts etcd and kube-apiserver with the CRDs found in dirs.
// When anything fails, it stops whatever it started.
func StartWithCRDs(dirs ...string) (*Env, error) {
	return StartWith(Options{CRDDirs: dirs})
}

// Options say what to install into the control plane.
type Options struct {
	// CRDDirs hold CRD manifests; default: config/crd/bases.
	CRDDirs []string
	// WebhookDirs hold webhook configurations; envtest points them at a
	// local address (WebhookServing) with certificates it makes.
	WebhookDirs []string
	// AuditLog, when set, is the file where the API server writes an
	// audit event (metadata only) for every request it answers; see
	// ReadAudit.
	AuditLog string
}

// auditPolicy records who did what to which object, and nothing of the
// bodies.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
- level: Metadata
`

// installWait bounds how long the start waits for the CRDs and webhook
// configurations to be served: envtest's default (10 s) is short for an API
// server that shares two busy cores with other tests and compilers.
const installWait = 2 * time.Minute

// StartWith starts etcd and kube-apiserver with what o names installed.
// When anything fails, it stops whatever it started.
func StartWith(o Options) (*Env, error) {
	root, err := Root()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir(root)
	if err != nil {
		return nil, err
	}
	if len(o.CRDDirs) == 0 {
		o.CRDDirs = []string{filepath.Join(root, "config", "crd", "bases")}
	}
	e := &Env{Root: root, Scheme: Scheme()}
	e.env = &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        o.CRDDirs,
		WebhookInstallOptions:    envtest.WebhookInstallOptions{Paths: o.WebhookDirs, MaxTime: installWait},
		CRDInstallOptions:        envtest.CRDInstallOptions{MaxTime: installWait},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   e.Scheme,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	// Without a default route (a test in a network namespace of its own)
	// kube-apiserver cannot pick an address to advertise, and it refuses
	// loopback ones: InOwnNetworkNamespace provides one.
	if a := os.Getenv(advertiseEnv); a != "" {
		e.env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", a)
	}
	if o.AuditLog != "" {
		policy := filepath.Join(filepath.Dir(o.AuditLog), "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			return nil, fmt.Errorf("writing the audit policy: %w", err)
		}
		e.env.ControlPlane.GetAPIServer().Configure().
			Set("audit-policy-file", policy).
			Set("audit-log-path", o.AuditLog).
			Set("audit-log-mode", "blocking")
	}
	if e.Config, err = e.env.Start(); err != nil {
		// envtest may have started etcd and kube-apiserver before failing
		// (for example on a CRD the API server refuses): stop them.
		return nil, errors.Join(fmt.Errorf("starting kube-apiserver and etcd from %s: %w", assets, err), e.env.Stop())
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		_ = e.env.Stop()
		return nil, fmt.Errorf("creating a client: %w", err)
	}
	return e, nil
}

// Stop stops the control plane and removes its data.
func (e *Env) Stop() error {
	return e.env.Stop()
}

// WebhookServing is where the API server calls webhooks: host, port and
// the directory with the serving certificate (tls.crt, tls.key).
func (e *Env) WebhookServing() (host string, port int, certDir string) {
	w := e.env.WebhookInstallOptions
	return w.LocalServingHost, w.LocalServingPort, w.LocalServingCertDir
}

// WebhookCA is the CA that signed the webhook serving certificate.
func (e *Env) WebhookCA() []byte { return e.env.WebhookInstallOptions.LocalServingCAData }

// ServiceAccountIssuer returns the issuer of the API server's
// ServiceAccount tokens and the PEM key it signs them with, so that a test
// can make a token the API server would have made at another time (an
// expired one, for instance).
func (e *Env) ServiceAccountIssuer() (issuer string, key []byte, err error) {
	api := e.env.ControlPlane.APIServer
	if api == nil {
		return "", nil, errors.New("the API server is not running")
	}
	key, err = os.ReadFile(filepath.Join(api.CertDir, "sa-signer.key"))
	if err != nil {
		return "", nil, fmt.Errorf("reading the API server's token signing key: %w", err)
	}
	return api.SecureServing.URL("https", "/").String(), key, nil
}

// AssetsDir is the directory of the control-plane binaries in use.
func (e *Env) AssetsDir() string { return e.env.BinaryAssetsDirectory }

// Kubeconfig writes a kubeconfig for the administrator to path, for
// kubectl and helm.
func (e *Env) Kubeconfig(path string) error {
	user, err := e.env.ControlPlane.AddUser(envtest.User{Name: "weft-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("adding an admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("rendering the kubeconfig: %w", err)
	}
	return os.WriteFile(path, kc, 0o600)
}

// KubeconfigFor renders a kubeconfig for a rest.Config, for handing to a
// process.
func KubeconfigFor(cfg *rest.Config) ([]byte, error) {
	c := clientcmdapi.NewConfig()
	c.Clusters["weft"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	c.AuthInfos["weft"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
	}
	c.Contexts["weft"] = &clientcmdapi.Context{Cluster: "weft", AuthInfo: "weft"}
	c.CurrentContext = "weft"
	return clientcmd.Write(*c)
}

// Eventually polls check every 50 ms until it returns nil or timeout
// passes, and returns the last error.
func Eventually(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("still failing after %s: %w", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
