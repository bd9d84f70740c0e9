// Package test holds weft's whole-system tests: they run weft's own
// binaries and the real Kubernetes ones from bin/.
package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testenv"
)

// TestQuickStart runs the quick start as a user would: it reads what the
// real kubectl printed and the split of live gRPC calls that the demo's
// client measured, while the tour edits the TrafficPolicy; then, from
// outside the demo's network namespace, it runs kubectl and weft status
// against the addresses the demo printed, edits the policy and watches the
// live split follow; it stops the demo with Ctrl-C (SIGINT) and checks
// that no process, port or directory is left behind.
func TestQuickStart(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir(root)
	if err != nil {
		t.Fatal(err)
	}
	weft := testenv.Binary(t, "weft")
	demo := testenv.Binary(t, "demo")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
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
	out := readOutput(stdout)
	defer func() {
		if t.Failed() {
			t.Logf("quick start output:\n%s", out.text())
		}
	}()
	if _, err := out.wait(ctx, 0, regexp.MustCompile(`Press Ctrl-C to stop everything`)); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("the quick start never got to its prompt: %v", err)
	}

	ns := demoNamespaces(t, cmd.Process.Pid)
	checkNamespaceProcesses(t, ns, demo, weft, assets)
	text := out.text()
	checkTour(t, text)
	checkSplits(t, text)
	checkFromHost(ctx, t, out, filepath.Join(assets, "kubectl"), weft)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the quick start did not exit cleanly on Ctrl-C: %v", err)
	}
	checkNothingLeft(t, out.text(), ns)
}

// checkTour looks for what the real kubectl and weft status showed.
func checkTour(t *testing.T, text string) {
	t.Helper()
	for _, re := range []string{
		`API server: https://127\.0\.0\.1:\d+ \(forwarded into the demo's network namespace`,
		`NAMESPACE\s+NAME\s+SERVICE\s+PORTS\s+ENDPOINTS\s+READY\s+AGE`,
		`bookinfo\s+meshservice.mesh.weft.dev/reviews\s+reviews\s+9080\s+2\s+True`,
		`bookinfo\s+trafficpolicy.mesh.weft.dev/reviews-canary\s+reviews\s+True\s+True\s+True`,
		`weft-system\s+peerauthentication.mesh.weft.dev/mesh-default\s+STRICT\s+Mesh\s+5\s+True`,
		`Type:\s+ResolvedRefs`,
		// The mesh-wide STRICT policy is in force: the demo's kubelet gives
		// every workload a pod certificate. Its Ready counts the client,
		// both reviews and ratings-v1, the servers it makes STRICT and
		// their callers.
		`Ready=True Synced: All 4 proxies have acknowledged generation 1`,
		`RulesEnforced=True Strict: Every endpoint takes mTLS only`,
		// The allow rule of reviews, enforced by its server on direct
		// calls: the product page's Get is answered, another identity and
		// another method are refused.
		`productpage-v1 \(spiffe://cluster\.local/ns/bookinfo/sa/productpage\) calls /bookinfo\.Service/Get: answered "reviews-v1"`,
		`ratings-v1 \(spiffe://cluster\.local/ns/bookinfo/sa/ratings\) calls /bookinfo\.Service/Get: refused, PermissionDenied`,
		`productpage-v1 \(spiffe://cluster\.local/ns/bookinfo/sa/productpage\) calls /bookinfo\.Service/Stats: refused, PermissionDenied`,
		// Ready follows what the four proxies acknowledged: the client,
		// both reviews, and ratings-v1, whose routes mirror to reviews
		// (config/samples).
		`Message:\s+All 4 proxies have acknowledged generation 2`,
		`spec.http\[0\].backends: Invalid value: .*weights of a route's backends must add up to 100`,
		`ResolvedRefs=False SubsetNotFound: spec.http\[1\].backends\[1\].subset: MeshService "reviews" has no subset "v4"`,
		`reviews-canary\s+reviews\s+True\s+True\s+True`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("the quick start's output has no match for %q", re)
		}
	}
	// Every proxy with its pod certificate; the servers' own Listeners
	// (ratings-v1 calls nothing, so it asks for nothing else).
	for proxy, sa := range map[string]string{"productpage-v1": "productpage", "reviews-v1": "reviews", "reviews-v2": "reviews"} {
		re := regexp.QuoteMeta(proxy+".bookinfo") + `\s+grpc(\s+synced \(\w+\)){4}\s+-\s+` + podCertificate(sa)
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("weft status in the tour does not show %s as synced with its pod certificate", proxy)
		}
	}
	if re := `ratings-v1\.bookinfo\s+grpc\s+synced \(\w+\)(\s+-){4}\s+` + podCertificate("ratings"); !regexp.MustCompile(re).MatchString(text) {
		t.Errorf("weft status in the tour does not show ratings-v1 as a server with its pod certificate")
	}
}

// podCertificate is how weft status shows a bookinfo workload's pod
// certificate.
func podCertificate(serviceAccount string) string {
	return regexp.QuoteMeta("spiffe://cluster.local/ns/bookinfo/sa/"+serviceAccount) + `\s+podCertificate, expires \d{4}-`
}

// tolerance is how far, in percentage points, a measured share may be
// from the policy's weight: over 1,000 calls the standard deviation is at
// most 1.6 points.
const tolerance = 6

// checkSplits compares the splits the demo measured with what the policy
// asked for at each step of the tour, and the failure-recovery tour's
// figures with what each step should do to failures and latency.
func checkSplits(t *testing.T, text string) {
	t.Helper()
	want := []map[string]float64{
		{"reviews-v1": 90, "reviews-v2": 10}, // the sample policy
		{"reviews-v1": 50, "reviews-v2": 50}, // edited with kubectl
		{"reviews-v1": 50, "reviews-v2": 50}, // reviews-v4 runs but is not in the policy
		{"reviews-v1": 50, "reviews-v2": 50}, // unresolved edit: the last good generation stays
		{"reviews-v1": 50, "reviews-v4": 50}, // subset v4 defined
	}
	// The failure-recovery tour, on ratings behind both reviews versions.
	recovery := []struct {
		step                 string
		minFailed, maxFailed float64 // percent of the calls
		minSlowest, maxSlow  time.Duration
	}{
		{"ratings-v2 fails a third of its calls, half of them", 5, 30, 0, time.Second},
		{"retries", 0, 0, 0, time.Second},
		{"outlier detection ejected ratings-v2", 0, 0, 0, time.Second},
		{"ratings-v3 answers after 1.5 s", 0, 0, 1400 * time.Millisecond, 2 * time.Second},
		{"a 500 ms timeout cuts it", 10, 90, 400 * time.Millisecond, 900 * time.Millisecond},
		{"ratings-v3 rolled back", 0, 0, 0, time.Second},
	}
	re := regexp.MustCompile(`==> Measured over (\d+) calls: (.*?) \((\d+) failed\)(?:, last error: .*)?; slowest call (\S+)`)
	got := re.FindAllStringSubmatch(text, -1)
	if len(got) != len(want)+len(recovery) {
		t.Fatalf("the quick start measured %d figures, want %d", len(got), len(want)+len(recovery))
	}
	for i, m := range got[:len(want)] {
		if n, _ := strconv.Atoi(m[1]); n < 1000 {
			t.Errorf("split %d was measured over %d calls, want at least 1000", i+1, n)
		}
		if m[3] != "0" {
			t.Errorf("split %d: %s calls failed", i+1, m[3])
		}
		if err := compareSplit(parseSplit(m[2]), want[i]); err != nil {
			t.Errorf("split %d (%s): %v", i+1, m[2], err)
		} else {
			t.Logf("split %d: %s", i+1, m[2])
		}
	}
	for i, m := range got[len(want):] {
		r := recovery[i]
		n, _ := strconv.Atoi(m[1])
		failed, _ := strconv.Atoi(m[3])
		slowest, err := time.ParseDuration(m[4])
		if err != nil {
			t.Errorf("%s: slowest call %q: %v", r.step, m[4], err)
			continue
		}
		share := 100 * float64(failed) / float64(n)
		t.Logf("%s: %d of %d calls failed (%.1f%%), slowest %v", r.step, failed, n, share, slowest)
		if share < r.minFailed || share > r.maxFailed {
			t.Errorf("%s: %.1f%% of %d calls failed, want %.0f to %.0f%%", r.step, share, n, r.minFailed, r.maxFailed)
		}
		if slowest < r.minSlowest || slowest > r.maxSlow {
			t.Errorf("%s: the slowest call took %v, want %v to %v", r.step, slowest, r.minSlowest, r.maxSlow)
		}
	}
}

// parseSplit reads "reviews-v1 90.8%, reviews-v2 9.2%".
func parseSplit(s string) map[string]float64 {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ", ") {
		name, pct, ok := strings.Cut(part, " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
		if err == nil {
			out[name] = v
		}
	}
	return out
}

func compareSplit(got, want map[string]float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("backends %v, want %v", got, want)
	}
	for b, w := range want {
		g, ok := got[b]
		if !ok || g < w-tolerance || g > w+tolerance {
			return fmt.Errorf("%s got %.1f%%, want %.1f ± %d", b, g, w, tolerance)
		}
	}
	return nil
}

// checkFromHost runs kubectl and weft status from the host, as the demo's
// prompt says, edits the policy to 90/10, and waits for the live split
// that the demo prints to follow.
func checkFromHost(ctx context.Context, t *testing.T, out *output, kubectl, weft string) {
	t.Helper()
	text := out.text()
	kc := regexp.MustCompile(`export KUBECONFIG=(\S+)`).FindStringSubmatch(text)
	xds := regexp.MustCompile(`status --xds-address (127\.0\.0\.1:\d+)\n`).FindStringSubmatch(text)
	patch := regexp.MustCompile(`kubectl (patch trafficpolicy .*)\n`).FindStringSubmatch(text[strings.LastIndex(text, "The cluster is yours"):])
	if kc == nil || xds == nil || patch == nil {
		t.Fatal("the prompt does not say how to reach the demo from another shell")
	}
	run := func(bin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kc[1])
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("from the host: %s %s: %v\n%s", bin, strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	if got := run(kubectl, "get", "trafficpolicy", "reviews-canary", "-n", "bookinfo"); !regexp.MustCompile(`reviews-canary\s+reviews\s+True\s+True\s+True`).MatchString(got) {
		t.Errorf("kubectl from the host:\n%s", got)
	}
	status := run(weft, "status", "--xds-address", xds[1])
	for _, proxy := range []string{"productpage-v1", "reviews-v1", "reviews-v2", "reviews-v4"} {
		if !regexp.MustCompile(regexp.QuoteMeta(proxy+".bookinfo") + `\s+grpc(\s+synced \(\w+\)){4}\s+-`).MatchString(status) {
			t.Errorf("weft status from the host does not show %s as synced:\n%s", proxy, status)
		}
	}

	// The edit that the prompt suggests, pasted into a shell.
	from := out.len()
	run("sh", "-c", kubectl+" "+patch[1])
	if err := waitLiveSplit(ctx, t, out, from, map[string]float64{"reviews-v1": 90, "reviews-v4": 10}); err != nil {
		t.Error(err)
	}
}

// waitLiveSplit waits for two live lines in a row, printed after line
// from, that show the split want (the first may straddle the change).
func waitLiveSplit(ctx context.Context, t *testing.T, out *output, from int, want map[string]float64) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	re := regexp.MustCompile(`^\s+\d\d:\d\d:\d\d  reviews: (.*) \((\d+) failed\), \d+ calls, slowest \S+$`)
	inRow := 0
	for i := from; ; i++ {
		next, err := out.wait(ctx, i, re)
		if err != nil {
			return fmt.Errorf("the live split never showed %v after the edit from the host: %w", want, err)
		}
		m := re.FindStringSubmatch(out.line(next))
		if compareSplit(parseSplit(m[1]), want) == nil && m[2] == "0" {
			inRow++
		} else {
			inRow = 0
		}
		if inRow == 2 {
			return nil
		}
		if inRow == 1 {
			t.Logf("live split after the edit from the host: %s", strings.TrimSpace(out.line(next)))
		}
		i = next
	}
}

// namespaces are the demo's network and PID namespaces, as
// /proc/<pid>/ns links read.
type namespaces struct{ net, pid string }

// demoNamespaces finds the namespaces of the demo's child, which runs
// everything else.
func demoNamespaces(t *testing.T, demoPID int) namespaces {
	t.Helper()
	for _, pid := range pids(t) {
		if parentOf(pid) != demoPID {
			continue
		}
		ns := namespaces{net: nsOf(pid, "net"), pid: nsOf(pid, "pid")}
		if ns.net == nsOf(os.Getpid(), "net") || ns.pid == nsOf(os.Getpid(), "pid") {
			t.Fatalf("the demo's child %d shares the test's namespaces", pid)
		}
		return ns
	}
	t.Fatal("the demo has no child running in namespaces of its own")
	return namespaces{}
}

// checkNamespaceProcesses checks that the control plane, weft and the
// workloads run in the demo's namespaces.
func checkNamespaceProcesses(t *testing.T, ns namespaces, demo, weft, assets string) {
	t.Helper()
	count := map[string]int{}
	for _, pid := range pids(t) {
		if nsOf(pid, "pid") == ns.pid && nsOf(pid, "net") == ns.net {
			exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
			count[exe]++
		}
	}
	want := map[string]int{
		filepath.Join(assets, "etcd"): 1, filepath.Join(assets, "kube-apiserver"): 1,
		filepath.Join(assets, "kube-controller-manager"): 1, weft: 1,
		demo: 6, // the demo in its namespace, ratings-v1, reviews-v1, -v2, -v4 and productpage-v1
	}
	for exe, n := range want {
		if count[exe] != n {
			t.Errorf("%d processes of %s run in the demo's namespaces, want %d (all: %v)", count[exe], exe, n, count)
		}
	}
}

// checkNothingLeft checks that no process remains in the demo's PID
// namespace, that the host's ports into it are closed and that its
// directory is gone.
func checkNothingLeft(t *testing.T, text string, ns namespaces) {
	t.Helper()
	err := testenv.Eventually(context.Background(), 10*time.Second, func(context.Context) error {
		for _, pid := range pids(t) {
			if nsOf(pid, "pid") == ns.pid {
				exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
				return fmt.Errorf("process %d (%s) still runs in the demo's namespace", pid, exe)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	for _, m := range regexp.MustCompile(`(?:https://|--xds-address )(127\.0\.0\.1:\d+)`).FindAllStringSubmatch(text, -1) {
		if c, err := net.DialTimeout("tcp", m[1], time.Second); err == nil {
			c.Close()
			t.Errorf("something still listens on %s", m[1])
		}
	}
	d := regexp.MustCompile(`/tmp/weft-demo-[0-9]+`).FindString(text)
	if d == "" {
		t.Error("the quick start did not print its directory")
	} else if _, err := os.Stat(d); err == nil {
		t.Errorf("the quick start left its directory %s behind", d)
	}
}

// pids lists the processes in /proc.
func pids(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// parentOf reads a process's parent from /proc/<pid>/stat; 0 if it is
// gone.
func parentOf(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

// nsOf reads a process's namespace link ("net:[4026532178]"); "" if it
// is gone.
func nsOf(pid int, kind string) string {
	s, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", kind))
	return s
}

// output collects a process's output lines as they come.
type output struct {
	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced on every line and at the end
	ended bool
}

func readOutput(r io.Reader) *output {
	o := &output{more: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			o.add(sc.Text(), false)
		}
		o.add("", true)
	}()
	return o
}

func (o *output) add(line string, end bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if end {
		o.ended = true
	} else {
		o.lines = append(o.lines, line)
	}
	close(o.more)
	o.more = make(chan struct{})
}

func (o *output) len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lines)
}

func (o *output) line(i int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lines[i]
}

func (o *output) text() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.lines, "\n") + "\n"
}

// wait returns the index of the first line at or after from that matches
// re, waiting for it.
func (o *output) wait(ctx context.Context, from int, re *regexp.Regexp) (int, error) {
	for {
		o.mu.Lock()
		for i := from; i < len(o.lines); i++ {
			if re.MatchString(o.lines[i]) {
				o.mu.Unlock()
				return i, nil
			}
		}
		from = max(from, len(o.lines))
		more, ended := o.more, o.ended
		o.mu.Unlock()
		if ended {
			return 0, fmt.Errorf("the output ended without a line matching %q", re)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no line matching %q: %w", re, ctx.Err())
		case <-more:
		}
	}
}
