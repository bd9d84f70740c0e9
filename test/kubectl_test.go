package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestKubectlExplain checks that the field docs reach users through the
// real kubectl: the doc comments become the CRD descriptions.
func TestKubectlExplain(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Error(err)
		}
	})
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
	// The API server publishes a new CRD's OpenAPI schema shortly after
	// the CRD is established.
	if err := testenv.Eventually(context.Background(), 30*time.Second, func(context.Context) error {
		_, err := run("explain", "trafficpolicy")
		return err
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
