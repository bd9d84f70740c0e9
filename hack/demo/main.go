// Command demo is weft's quick start: on a machine with no cluster it starts
// etcd, kube-apiserver and kube-controller-manager from bin/, installs the
// CRDs, runs the weft controller with its xDS server, runs a small gRPC
// application (two versions of reviews, ratings and a client, all
// proxyless gRPC configured by weft), applies the samples and shows the
// live split of requests while it edits the TrafficPolicy with kubectl.
// Ctrl-C stops everything.
//
//	go run ./hack/demo [-once] [-weft bin/weft] [-netns=false]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

// options are the demo's flags.
type options struct {
	weft  string
	once  bool
	netns bool
	out   io.Writer
}

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "client") {
		if err := runWorkload(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "demo "+os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	o := options{out: os.Stdout}
	flag.BoolVar(&o.once, "once", false, "show the tour and stop instead of waiting for Ctrl-C")
	flag.StringVar(&o.weft, "weft", "bin/weft", "the weft binary to run as the controller")
	flag.BoolVar(&o.netns, "netns", true, "run in a network namespace of its own, with workloads and live traffic; false: without them")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case os.Getenv(inNamespaceEnv) != "":
		var fw *forwards
		if fw, err = enterNamespace(podAddresses()); err == nil {
			err = run(ctx, o, fw)
		}
	case o.netns:
		err = runOutside(ctx, o)
	default:
		fmt.Fprintln(o.out, "\n==> -netns=false: the demo runs without its workloads and live traffic.")
		err = run(ctx, o, nil)
	}
	if err != nil {
		if !errors.Is(err, errAlreadyReported) {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(1)
	}
}

// demo is a running quick start.
type demo struct {
	options
	env        *testenv.Env
	dir        string
	kubectl    string
	kubeconfig string    // what the demo's own kubectl and the controllers use
	forwards   *forwards // the host's ports into the namespace; nil: none
	traffic    *traffic  // the client's reports; nil: no live traffic
	routes     string    // the route version the client last acknowledged
	procs      []*exec.Cmd
	byName     map[string]*exec.Cmd // procs, by the name they were started as
	creds      credentials          // the pods' tokens
}

// run starts everything and shows the tour. With forwards, it runs in the
// demo's own network namespace, with workloads and live traffic.
func run(ctx context.Context, o options, fw *forwards) (err error) {
	if o.weft, err = filepath.Abs(o.weft); err != nil {
		return err
	}
	if _, err := os.Stat(o.weft); err != nil {
		return fmt.Errorf("the weft binary %s is missing: run 'make build'", o.weft)
	}
	d := &demo{options: o, forwards: fw}
	if fw != nil {
		d.traffic = newTraffic()
	}
	if d.dir, err = os.MkdirTemp("", "weft-demo-"); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.stop()) }()
	if err := d.startControlPlane(ctx); err != nil {
		return err
	}
	if err := d.startWeft(); err != nil {
		return err
	}
	if err := d.applyWorkloadsAndSamples(ctx); err != nil {
		return err
	}
	if err := d.tour(ctx); err != nil {
		return err
	}
	if d.once {
		return nil
	}
	d.prompt()
	if d.traffic != nil {
		err = d.traffic.live(ctx, d.out)
	} else {
		<-ctx.Done()
	}
	d.say("Stopping ...")
	return err
}

// startControlPlane starts etcd, kube-apiserver and
// kube-controller-manager, and writes the kubeconfigs.
func (d *demo) startControlPlane(ctx context.Context) (err error) {
	d.say("Starting etcd and kube-apiserver %s (with weft's CRDs) ...", testenv.K8sVersion)
	if d.env, err = testenv.Start(); err != nil {
		return err
	}
	d.kubectl = filepath.Join(d.env.AssetsDir(), "kubectl")
	d.kubeconfig = filepath.Join(d.dir, "kubeconfig")
	if d.forwards != nil {
		d.kubeconfig = filepath.Join(d.dir, "kubeconfig-in-namespace")
	}
	if err := d.env.Kubeconfig(d.kubeconfig); err != nil {
		return err
	}
	if err := d.startForwards(); err != nil {
		return err
	}
	d.say("Starting kube-controller-manager (its EndpointSlice controller publishes the pods' addresses) ...")
	return d.start("kube-controller-manager", exec.Command(filepath.Join(d.env.AssetsDir(), "kube-controller-manager"),
		"--kubeconfig="+d.kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=endpointslice-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller"))
}

// startForwards serves the host's ports into the namespace and writes the
// user's kubeconfig, which points at the host's port.
func (d *demo) startForwards() error {
	if d.forwards == nil {
		d.say("API server: %s", strings.TrimSuffix(d.env.Config.Host, "/"))
		return nil
	}
	u, err := url.Parse(d.env.Config.Host)
	if err != nil {
		return fmt.Errorf("the API server's address: %w", err)
	}
	api := u.Host
	go forward(d.forwards.api, api)
	go forward(d.forwards.xds, statusAddr)
	d.say("API server: https://%s (forwarded into the demo's network namespace, where it listens on %s)", d.forwards.api.Addr(), api)
	cfg, err := clientcmd.LoadFromFile(d.kubeconfig)
	if err != nil {
		return fmt.Errorf("reading the kubeconfig: %w", err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + d.forwards.api.Addr().String()
	}
	if err := clientcmd.WriteToFile(*cfg, d.userKubeconfig()); err != nil {
		return fmt.Errorf("writing the kubeconfig for the host: %w", err)
	}
	return nil
}

// userKubeconfig is the kubeconfig for the user's shell.
func (d *demo) userKubeconfig() string { return filepath.Join(d.dir, "kubeconfig") }

// userXDS is the address of weft's xDS server from the user's shell.
func (d *demo) userXDS() string {
	if d.forwards == nil {
		return "(off)"
	}
	return d.forwards.xds.Addr().String()
}

// startWeft runs the weft controller, with its xDS server when there are
// workloads to serve.
func (d *demo) startWeft() error {
	args := []string{"controller", "--kubeconfig=" + d.kubeconfig, "--metrics-bind-address=0",
		"--health-probe-bind-address=0", "--webhook-port=0", "--log-format=console"}
	what := ""
	if d.traffic != nil {
		// The demo's kubelet asks for pod certificates, which weft signs:
		// the workloads speak mutual TLS where a PeerAuthentication says
		// STRICT, and their servers check the MeshServices' allow rules on
		// the callers' certificates.
		args = append(args, "--xds-bind-address="+xdsAddr, "--xds-auth=token", "--xds-host="+xdsHost,
			"--xds-status-bind-address="+statusAddr, "--cert-delivery=podCertificate")
		what = " and its xDS server on " + xdsAddr + " (TLS from the mesh CA; every proxy proves its pod with its token),\n" +
			"    signing the pods' certificates (PodCertificateRequests)"
	}
	d.say("Starting the weft controller%s (log: %s) ...", what, filepath.Join(d.dir, "weft-controller.log"))
	if err := d.start("weft-controller", exec.Command(d.weft, args...)); err != nil {
		return err
	}
	if d.traffic == nil {
		return nil
	}
	return probe(context.Background(), xdsAddr)
}

// applyWorkloadsAndSamples applies the Services the samples name and
// config/samples, and starts the pods.
func (d *demo) applyWorkloadsAndSamples(ctx context.Context) error {
	root := d.env.Root
	d.say("Applying the Services the samples name (hack/demo/workloads.yaml) and config/samples ...")
	if err := d.kubectlRun(ctx, "apply", "-f", filepath.Join(root, "hack", "demo", "workloads.yaml")); err != nil {
		return err
	}
	if err := d.kubectlRun(ctx, "apply", "-k", filepath.Join(root, "config", "samples")); err != nil {
		return err
	}
	if d.traffic != nil {
		if err := d.writeRootCA(ctx); err != nil {
			return err
		}
		d.say("Playing the kubelet of their pods: ratings-v1, reviews-v1 and reviews-v2 run as gRPC xDS servers on their\n" +
			"    pods' addresses, each with a certificate weft signed for its ServiceAccount; both reviews call ratings for\n" +
			"    every call they serve, through the mesh (proxyless gRPC: weft's xDS server configures clients and servers).\n" +
			"    mongodb-0 runs nothing: nothing in the tour calls it. Logs, certificates and xDS bootstraps: " + d.dir)
	} else {
		d.say("Playing the kubelet of their pods ...")
	}
	if err := d.startPods(ctx, withWorkloads); err != nil {
		return err
	}
	return d.waitSettled(ctx)
}

// prompt tells the user what to try while the demo runs.
func (d *demo) prompt() {
	k := d.kubectl
	msg := fmt.Sprintf("The cluster is yours. In another shell:\n\n  export KUBECONFIG=%s\n  %s get meshservices,trafficpolicies -A\n  %s explain trafficpolicy.spec.http\n",
		d.userKubeconfig(), k, k)
	if d.traffic != nil {
		msg += fmt.Sprintf("  %s patch trafficpolicy reviews-canary -n bookinfo --type=json -p %s\n  %s edit trafficpolicy reviews-canary -n bookinfo\n  %s status --xds-address %s\n\n"+
			"and watch the split below follow your edits (a line every 2 s).",
			k, shellJoin([]string{weightsPatch(90, 10)}), k, d.weft, d.userXDS())
	}
	d.say("%s", msg)
	d.say("Press Ctrl-C to stop everything.")
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n==> "+format+"\n", args...)
}

// start runs a process in its own process group with its output (unless
// cmd has its own) in a log file under the demo's directory.
func (d *demo) start(name string, cmd *exec.Cmd) error {
	log, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	if cmd.Stdout == nil {
		cmd.Stdout = log
	}
	cmd.Stderr = log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	if d.byName == nil {
		d.byName = map[string]*exec.Cmd{}
	}
	d.byName[name] = cmd
	return nil
}

// stop ends the processes, last started first (TERM, then KILL after
// 10 s), the control plane, and removes the demo's directory.
func (d *demo) stop() error {
	var errs []error
	for i := len(d.procs) - 1; i >= 0; i-- {
		stopProcess(d.procs[i])
	}
	if d.env != nil {
		if err := d.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	if d.forwards != nil {
		errs = append(errs, d.forwards.api.Close(), d.forwards.xds.Close())
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

func stopProcess(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// kubectlRun runs kubectl and fails on error, printing its output.
func (d *demo) kubectlRun(ctx context.Context, args ...string) error {
	out, err := d.kubectlOutput(ctx, "", args...)
	fmt.Fprint(d.out, indent(out))
	if err != nil {
		return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// show prints a kubectl command and its output, errors included: showing
// a refusal is part of the tour. An argument "<<text" is fed as stdin.
func (d *demo) show(ctx context.Context, args ...string) {
	stdin := ""
	if n := len(args); n > 0 && strings.HasPrefix(args[n-1], "<<") {
		stdin, args = strings.TrimPrefix(args[n-1], "<<"), args[:n-1]
	}
	fmt.Fprintf(d.out, "\n$ kubectl %s\n", shellJoin(args))
	out, _ := d.kubectlOutput(ctx, stdin, args...)
	fmt.Fprint(d.out, out)
}

func (d *demo) kubectlOutput(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.kubectl, append([]string{"--kubeconfig", d.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// waitSettled waits until every sample MeshService counts the ready
// endpoints of the pods started so far and every sample has Ready set for
// its generation (with the xDS server on: acknowledged by every proxy).
func (d *demo) waitSettled(ctx context.Context) error {
	want := map[string]int32{}
	for _, p := range demoPods {
		if p.stage == withWorkloads {
			want[p.app]++
		}
	}
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		list := &meshv1.MeshServiceList{}
		if err := d.env.Client.List(ctx, list, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		if len(list.Items) != 3 {
			return fmt.Errorf("%d MeshServices, want 3", len(list.Items))
		}
		for _, ms := range list.Items {
			if ms.Status.Endpoints.Ready != want[ms.Spec.ServiceName] {
				return fmt.Errorf("MeshService %s has %d ready endpoints, want %d", ms.Name, ms.Status.Endpoints.Ready, want[ms.Spec.ServiceName])
			}
			if err := readyAt(ms.Status.Conditions, ms.Generation); err != nil {
				return fmt.Errorf("MeshService %s: %w", ms.Name, err)
			}
		}
		tps := &meshv1.TrafficPolicyList{}
		if err := d.env.Client.List(ctx, tps, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		for _, tp := range tps.Items {
			if err := readyAt(tp.Status.Conditions, tp.Generation); err != nil {
				return fmt.Errorf("TrafficPolicy %s: %w", tp.Name, err)
			}
		}
		return nil
	})
}

// readyAt says why Ready is not True for a generation.
func readyAt(conds []metav1.Condition, gen int64) error {
	c := meta.FindStatusCondition(conds, meshv1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != gen {
		return fmt.Errorf("not Ready for generation %d yet: %+v", gen, c)
	}
	return nil
}

// waitCondition waits until a condition of a TrafficPolicy has a status
// for its current generation.
func (d *demo) waitCondition(ctx context.Context, policy, condType string, st metav1.ConditionStatus) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		tp := &meshv1.TrafficPolicy{}
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: policy}, tp); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(tp.Status.Conditions, condType); c == nil || c.Status != st || c.ObservedGeneration != tp.Generation {
			return fmt.Errorf("%s of %s is not %s for generation %d yet", condType, policy, st, tp.Generation)
		}
		return nil
	})
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// shellJoin quotes the arguments that a shell would split or expand.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " {}[]\"$*?'\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
