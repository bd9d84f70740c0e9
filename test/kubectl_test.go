package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestKubectlExplain checks that the field docs reach users through the
// real kubectl: the doc comments become the CRD descriptions.
func TestKubectlExplain(t *testing.T) {
	env := testenv.ForTest(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.Kubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(env.AssetsDir(), "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := run(args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The API server publishes each new CRD's OpenAPI schema shortly after
	// the CRD is established, one CRD at a time.
	if err := testenv.Eventually(context.Background(), 90*time.Second, func(context.Context) error {
		for _, kind := range []string{"meshservice", "trafficpolicy", "peerauthentication"} {
			if _, err := run("explain", kind); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		field string
		want  []string
	}{
		{"trafficpolicy.spec.retries", []string{
			"retries retries failed requests to the service",
			"attempts\t<integer>", "attempts is the number of retries after the first try",
			"retryOn\t<[]string>", "backoff\t<Object>", "budget\t<Object>",
		}},
		{"meshservice.spec.ports.protocol", []string{"protocol is what the port speaks", "Default: tcp", "ENUM:", "grpc"}},
		{"peerauthentication.spec.mode", []string{"STRICT, PERMISSIVE or DISABLE", "inherited from the next wider policy"}},
		{"meshservice.status.conditions", []string{"Accepted, ResolvedRefs", "Ready"}},
	} {
		out := kubectl("explain", tc.field)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("kubectl explain %s does not show %q:\n%s", tc.field, w, out)
			}
		}
	}

	// Short names and the weft category work.
	out := kubectl("api-resources", "--api-group=mesh.weft.dev", "-o", "wide")
	for _, w := range []string{"msvc,meshsvc", "tp,trafficpol", "peerauth,pa", "weft"} {
		if !strings.Contains(out, w) {
			t.Errorf("kubectl api-resources lacks %q:\n%s", w, out)
		}
	}
}

// TestKubectlPlugin: the weft binary installed as kubectl-weft is found by
// the real kubectl, and `kubectl weft status` lists the proxies connected
// to a live xDS server (here one proxyless client).
func TestKubectlPlugin(t *testing.T) {
	dir := t.TempDir()
	// The plugin is the weft binary under the name kubectl looks for (what
	// make build installs as bin/kubectl-weft).
	if err := os.Symlink(testenv.Binary(t, "weft"), filepath.Join(dir, "kubectl-weft")); err != nil {
		t.Fatal(err)
	}
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(root, "bin", "k8s", testenv.K8sVersion, "kubectl")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(os.Environ(), "PATH="+dir, "KUBECACHEDIR="+t.TempDir(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("plugin", "list"); !strings.Contains(out, filepath.Join(dir, "kubectl-weft")) {
		t.Fatalf("kubectl does not list the plugin:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := server.New(server.Options{Address: "127.0.0.1:0", Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Start(ctx) }()
	addr, err := srv.Addr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A client connects to the xDS server when it makes its first RPC
	// (which fails: the mesh is empty).
	client := xdstest.NewClient(t, addr, "client-1.shop", "reviews.bookinfo.svc.cluster.local:9080")
	callCtx, stopCall := context.WithTimeout(ctx, 30*time.Second)
	defer stopCall()
	go func() { _, _ = client.Call(callCtx) }()
	if err := testenv.Eventually(ctx, 30*time.Second, func(context.Context) error {
		if len(srv.Proxies()) == 0 {
			return fmt.Errorf("no proxy connected yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out := run("weft", "status", "--xds-address", addr)
	if !strings.Contains(out, "PROXY") || !regexp.MustCompile(`client-1\.shop\s+grpc`).MatchString(out) {
		t.Fatalf("kubectl weft status:\n%s", out)
	}
}

// TestCARotateAndRetire runs `weft ca rotate` and `weft ca retire` against
// the real API server: a new root signs and both are trusted, then only
// the new one.
func TestCARotateAndRetire(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}); err != nil {
		t.Fatal(err)
	}
	first, err := identity.LoadOrCreateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.Kubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	weft := testenv.Binary(t, "weft")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, weft, append(args, "--kubeconfig", kubeconfig)...).CombinedOutput()
		if err != nil {
			t.Fatalf("weft %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("ca", "rotate"); !strings.Contains(out, "2 root(s) trusted") || !strings.Contains(out, "weft ca promote") {
		t.Fatalf("weft ca rotate: %s", out)
	}
	load := func() *identity.Root {
		t.Helper()
		r, err := identity.LoadOrCreateRoot(ctx, env.Client, "weft-system", "cluster.local", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if !load().CA.Cert.Equal(first.CA.Cert) {
		t.Fatal("weft ca rotate made the new root sign before it was promoted")
	}
	if out := run("ca", "promote"); !strings.Contains(out, "2 root(s) trusted") || !strings.Contains(out, "weft ca retire") {
		t.Fatalf("weft ca promote: %s", out)
	}
	if load().CA.Cert.Equal(first.CA.Cert) {
		t.Fatal("weft ca promote kept the old root signing")
	}
	if out := run("ca", "retire"); !strings.Contains(out, "1 root(s) trusted") {
		t.Fatalf("weft ca retire: %s", out)
	}
}
