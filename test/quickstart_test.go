// Package test holds weft's whole-system tests: they run weft's own
// binaries and the real Kubernetes ones from bin/.
package test

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testenv"
)

// buildBinary builds a package of the module into dir and returns the path.
func buildBinary(t *testing.T, root, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// controlPlaneProcs lists the PIDs of running kube-apiserver, etcd,
// kube-controller-manager and weft processes started from the given
// binaries.
func controlPlaneProcs(t *testing.T, exes ...string) map[int]string {
	t.Helper()
	procs := map[int]string{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid := 0
		for _, c := range e.Name() {
			if c < '0' || c > '9' {
				pid = -1
				break
			}
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		for _, want := range exes {
			if exe == want {
				procs[pid] = exe
			}
		}
	}
	return procs
}

// TestQuickStart runs the quick start as a user would, reads what the real
// kubectl printed, stops it with Ctrl-C (SIGINT), and checks that no
// process or port is left behind.
func TestQuickStart(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	weft := buildBinary(t, root, dir, ".", "weft")
	demo := buildBinary(t, root, dir, "./hack/demo", "demo")
	watched := []string{weft, filepath.Join(assets, "kube-apiserver"), filepath.Join(assets, "etcd"), filepath.Join(assets, "kube-controller-manager")}
	before := controlPlaneProcs(t, watched...)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "-weft", weft)
	cmd.Dir = root
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	var out strings.Builder
	prompt := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Press Ctrl-C to stop everything") {
				close(prompt)
			}
		}
	}()
	select {
	case <-prompt:
	case <-ctx.Done():
		t.Fatalf("the quick start never got to its prompt:\n%s", out.String())
	}

	during := controlPlaneProcs(t, watched...)
	started := 0
	for pid := range during {
		if _, ok := before[pid]; !ok {
			started++
		}
	}
	if started < 4 {
		t.Errorf("expected etcd, kube-apiserver, kube-controller-manager and weft running, found %d new processes", started)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the quick start did not exit cleanly on Ctrl-C: %v\n%s", err, out.String())
	}
	text := out.String()

	// What the real kubectl showed: printer columns with live values.
	for _, re := range []string{
		`NAMESPACE\s+NAME\s+SERVICE\s+PORTS\s+ENDPOINTS\s+READY\s+AGE`,
		`bookinfo\s+meshservice.mesh.weft.dev/reviews\s+reviews\s+9080\s+3\s+True`,
		`bookinfo\s+trafficpolicy.mesh.weft.dev/reviews-canary\s+reviews\s+True\s+True\s+True`,
		`weft-system\s+peerauthentication.mesh.weft.dev/mesh-default\s+STRICT\s+Mesh\s+5\s+True`,
		`Type:\s+ResolvedRefs`,
		`spec.http\[0\].backends: Invalid value: .*weights of a route's backends must add up to 100`,
		`ResolvedRefs=False SubsetNotFound: spec.http\[1\].backends\[1\].subset: MeshService "reviews" has no subset "v4"`,
		`reviews-canary\s+reviews\s+True\s+True\s+True`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("the quick start's output has no match for %q", re)
		}
	}
	if t.Failed() {
		t.Logf("quick start output:\n%s", text)
	}

	// Nothing left behind: no process, and the API server's port is free.
	if err := testenv.Eventually(context.Background(), 10*time.Second, func(context.Context) error {
		for pid, exe := range controlPlaneProcs(t, watched...) {
			if _, ok := before[pid]; !ok {
				return &leftover{pid, exe}
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	m := regexp.MustCompile(`API server: (\S+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("the quick start did not print the API server's address")
	}
	u, err := url.Parse(m[1])
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on the API server's address %s", u.Host)
	}
	if strings.Contains(text, "/tmp/weft-demo-") {
		d := regexp.MustCompile(`/tmp/weft-demo-[0-9]+`).FindString(text)
		if _, err := os.Stat(d); err == nil {
			t.Errorf("the quick start left its directory %s behind", d)
		}
	}
}

type leftover struct {
	pid int
	exe string
}

func (l *leftover) Error() string { return "process " + l.exe + " is still running" }
