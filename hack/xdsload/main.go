// Command xdsload measures weft's xDS server under load: it starts the
// server in a child process with a synthetic mesh, connects delta xDS
// clients to it over loopback from this process, and times events (an
// endpoint flap, a service added, a route changed, a change of every
// endpoint resource) from the change of the mesh to the last client's ACK.
// It then measures the floor: the same bytes, serialized once, pushed by a
// bare gRPC server to the same number of clients. It reports the server's
// memory per connected proxy, and prints a Markdown table.
//
//	go run ./hack/xdsload -services 1000 -clients 1000 -events 30
//
// With -soak it instead replaces a pod (a new name and address for one
// endpoint) of the first -churn-services services, in turn, every
// -churn-every for that long, reads the server's memory
// and goroutines every -sample, prints a table per -window, and exits
// non-zero unless, after -warmup, heap in use and goroutines grew by less
// than -max-growth percent and the push p99 stayed within -max-p99-ratio
// of the first window's:
//
//	go run ./hack/xdsload -services 10000 -clients 1000 -soak 30m
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// serveEnv, set in the environment, makes the process the server (xdsload
// starts itself so).
const serveEnv = "XDSLOAD_SERVE"

type options struct {
	services, clients, events, fullEvents, wave int
	heapProfile, kinds                          string
	soak                                        soakOptions
}

func main() {
	var o options
	flag.IntVar(&o.services, "services", 1000, "services in the mesh (10 endpoints each)")
	flag.IntVar(&o.clients, "clients", 1000, "delta xDS clients to connect")
	flag.IntVar(&o.events, "events", 30, "events of each kind to time")
	flag.IntVar(&o.wave, "wave", 1000, "clients that connect together")
	flag.StringVar(&o.kinds, "kinds", "flap,route,add", "events to time, of flap, route and add")
	flag.IntVar(&o.fullEvents, "full-events", 10, "changes of every endpoint resource to time, against the floor")
	flag.StringVar(&o.heapProfile, "heap-profile", "", "write the server's heap profile with every client connected to this file (with -soak, also at the end, to the file plus .end)")
	flag.DurationVar(&o.soak.duration, "soak", 0, "instead of timing events, replace pods for this long and judge memory, goroutines and push latency")
	flag.IntVar(&o.soak.services, "churn-services", 200, "with -soak: replace pods of this many services, in turn (0: all); a service's first change costs memory its later ones do not (docs/reliability.md, \"Soak\")")
	flag.DurationVar(&o.soak.churnEvery, "churn-every", time.Second, "with -soak: replace a pod this often (one after the other when a push takes longer)")
	flag.DurationVar(&o.soak.sample, "sample", time.Minute, "with -soak: read the server's memory this often")
	flag.DurationVar(&o.soak.warmup, "warmup", 5*time.Minute, "with -soak: the start that is not judged")
	flag.DurationVar(&o.soak.window, "window", 5*time.Minute, "with -soak: the table's window")
	flag.Float64Var(&o.soak.maxGrowth, "max-growth", 5, "with -soak: the growth of heap in use and goroutines after the warm-up, in percent, that fails the run")
	flag.Float64Var(&o.soak.maxP99Ratio, "max-p99-ratio", 1.5, "with -soak: how far the last window's push p99 may exceed the first's after the warm-up")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if os.Getenv(serveEnv) != "" {
		err = runServer(ctx, o.services, os.Stdin, os.Stdout)
	} else {
		err = run(ctx, o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
}

// child is the server process and the line protocol to it: a command per
// line in, a JSON reply per line out.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startChild(ctx context.Context, services int) (*child, hello, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, hello{}, err
	}
	cmd := exec.CommandContext(ctx, self, fmt.Sprintf("-services=%d", services))
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, hello{}, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, hello{}, err
	}
	if err := cmd.Start(); err != nil {
		return nil, hello{}, fmt.Errorf("starting the server process: %w", err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	c.out.Buffer(make([]byte, 1<<20), 1<<20)
	var h hello
	if err := c.read(&h); err != nil {
		return nil, hello{}, fmt.Errorf("the server process did not start: %w", err)
	}
	return c, h, nil
}

func (c *child) read(v any) error {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return err
		}
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(c.out.Bytes(), v)
}

// ask sends a command and decodes the reply.
func (c *child) ask(v any, command string, args ...any) error {
	if _, err := fmt.Fprintln(c.in, strings.Join(append([]string{command}, fmt.Sprint(args...)), " ")); err != nil {
		return err
	}
	var r reply
	if err := c.read(&r); err != nil {
		return fmt.Errorf("%s: %w", command, err)
	}
	if r.Error != "" {
		return fmt.Errorf("%s: %s", command, r.Error)
	}
	return json.Unmarshal(r.Data, v)
}

func (c *child) stop() error {
	c.in.Close()
	return c.cmd.Wait()
}

func run(ctx context.Context, o options, out io.Writer) error {
	ch, h, err := startChild(ctx, o.services)
	if err != nil {
		return err
	}
	defer func() { _ = ch.stop() }() // run's own error is the one to report
	fmt.Fprintf(out, "xdsload: %d services, %d delta clients, server process %d (xDS %s, floor %s)\n", o.services, o.clients, ch.cmd.Process.Pid, h.XDS, h.Floor)

	var idle memory
	if err := ch.ask(&idle, "memory"); err != nil {
		return err
	}
	// Clients connect in waves, each waiting until the server has
	// settled the last: a thousand clients that all take a large mesh at
	// once would hold a copy each in this process.
	start := time.Now()
	clients, cctx := newClientSet(ctx)
	defer clients.close()
	for from := 0; from < o.clients; from += o.wave {
		to := min(from+o.wave, o.clients)
		if err := clients.add(cctx, h.XDS, from, to); err != nil {
			return err
		}
		var synced settle
		if err := ch.ask(&synced, "settle", to); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "all %d clients connected and acknowledged everything in %v (%.1f MB received)\n", o.clients, time.Since(start).Round(time.Millisecond), float64(clients.bytes())/1e6)
	var loaded memory
	if err := ch.ask(&loaded, "memory"); err != nil {
		return err
	}
	perProxy := float64(loaded.HeapInuse-idle.HeapInuse) / float64(o.clients) / 1024
	fmt.Fprintf(out, "server memory: heap in use %.1f MiB idle, %.1f MiB with %d proxies (%.1f KiB per proxy); RSS %.1f MiB -> %.1f MiB\n",
		mib(idle.HeapInuse), mib(loaded.HeapInuse), o.clients, perProxy, mib(idle.RSS), mib(loaded.RSS))
	if o.heapProfile != "" {
		var none any
		if err := ch.ask(&none, "heapprofile", o.heapProfile); err != nil {
			return err
		}
	}
	if o.soak.duration > 0 {
		if o.heapProfile != "" {
			o.soak.profile = o.heapProfile + ".end"
		}
		fmt.Fprintf(out, "soak: a pod of one of %d services replaced every %v for %v, memory read every %v, the first %v not judged\n",
			min(cmp.Or(o.soak.services, o.services), o.services), o.soak.churnEvery, o.soak.duration, o.soak.sample, o.soak.warmup)
		return soak(ctx, ch, o.soak, out)
	}

	results := map[string][]float64{}
	kinds := strings.Split(o.kinds, ",")
	for i := range o.events {
		for _, kind := range kinds {
			var r event
			if err := ch.ask(&r, "event", kind); err != nil {
				return err
			}
			results[kind] = append(results[kind], r.Millis)
			if i == 0 {
				fmt.Fprintf(out, "  %s: %.1f ms (translation %.1f ms)\n", kind, r.Millis, r.TranslateMillis)
			}
		}
	}
	var fullBytes int
	for range o.fullEvents {
		var r event
		if err := ch.ask(&r, "event", "full"); err != nil {
			return err
		}
		results["full"] = append(results["full"], r.Millis)
		results["full-push"] = append(results["full-push"], r.Millis-r.TranslateMillis)
		fullBytes = r.Bytes
	}
	clients.close()

	for range min(o.fullEvents, 1) {
		if err := timeFloor(ctx, ch, h.Floor, o, results); err != nil {
			return err
		}
	}
	var after memory
	if err := ch.ask(&after, "memory"); err != nil {
		return err
	}
	fmt.Fprintf(out, "server memory after the events: heap in use %.1f MiB, RSS %.1f MiB, peak RSS %.1f MiB\n", mib(after.HeapInuse), mib(after.RSS), mib(after.PeakRSS))

	fmt.Fprintf(out, "\n| event (%d services, %d clients) | events | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|\n", o.services, o.clients)
	for _, kind := range append(kinds, "full", "full-push", "floor") {
		xs := results[kind]
		if len(xs) == 0 {
			continue
		}
		fmt.Fprintf(out, "| %s | %d | %.1f | %.1f | %.1f |\n", label(kind, fullBytes), len(xs), pct(xs, 50), pct(xs, 99), pct(xs, 100))
	}
	if o.fullEvents > 0 {
		fmt.Fprintf(out, "\nfull push / floor (p50): %.2f with the translation, %.2f without\n",
			pct(results["full"], 50)/pct(results["floor"], 50), pct(results["full-push"], 50)/pct(results["floor"], 50))
	}
	return nil
}

// timeFloor connects the clients to the floor server and times the push
// of the last full event's bytes to all of them.
func timeFloor(ctx context.Context, ch *child, addr string, o options, results map[string][]float64) error {
	clients, err := connect(ctx, addr, o.clients)
	if err != nil {
		return err
	}
	defer clients.close()
	for range o.fullEvents {
		var r event
		if err := ch.ask(&r, "floor", o.clients); err != nil {
			return err
		}
		results["floor"] = append(results["floor"], r.Millis)
	}
	return nil
}

func label(kind string, fullBytes int) string {
	switch kind {
	case "flap":
		return "endpoint flap"
	case "route":
		return "route changed"
	case "add":
		return "service added"
	case "full":
		return fmt.Sprintf("every endpoint resource changed (%.0f KB per client)", float64(fullBytes)/1e3)
	case "full-push":
		return "the same, from the end of the translation"
	}
	return "floor: the same bytes, pre-serialized"
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// pct is the p-th percentile (nearest rank) of xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}
