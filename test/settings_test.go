package test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testenv"
)

// The controller refuses at start, naming the flag, a mesh setting that
// every sidecar would refuse (an access-log format Envoy cannot parse, a
// malformed collector address, a sampling value out of range), instead of
// sending it to every proxy to be NACKed. It exits before it reaches any
// API server.
func TestControllerRefusesSettingsSidecarsWouldRefuse(t *testing.T) {
	weft := testenv.Binary(t, "weft")
	for _, tc := range []struct{ flag, want string }{
		{"--access-log-format=%START_TIME% %RESPONSE_CODES%", "--access-log-format"},
		{"--access-log-format=%REQ%", "REQ needs parameters"},
		{"--access-log-format=100% done", "does not start a command operator"},
		{"--tracing-endpoint=collector", "--tracing-endpoint"},
		{"--tracing-sampling=120", "--tracing-sampling"},
		{"--metrics-endpoint=collector:http", "--metrics-endpoint"},
		// Certificates: a CA source that does not exist, an issuer not
		// named, and pod certificates with no CA weft holds.
		{"--ca=vault", "--ca"},
		{"--ca=cert-manager", "--issuer-name"},
		{"--ca=cert-manager --issuer-name=corp --cert-delivery=podCertificate", "--cert-delivery=podCertificate"},
		{"--ca=cert-manager --issuer-name=corp --issuer-qps=0", "--issuer-qps"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := append([]string{"controller"}, strings.Fields(tc.flag)...)
		if strings.HasPrefix(tc.flag, "--access-log-format") {
			args = []string{"controller", tc.flag} // one flag with spaces in it
		}
		out, err := exec.CommandContext(ctx, weft, append(args, "--kubeconfig=/nonexistent")...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Errorf("%s: the controller did not exit with an error (%v):\n%s", tc.flag, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "nonexistent") {
			t.Errorf("%s: the controller's error does not name %q (or it went on to load the kubeconfig):\n%s", tc.flag, tc.want, out)
		}
	}
}
