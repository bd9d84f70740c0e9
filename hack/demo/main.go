// Command demo is weft's quick start: on a machine with no cluster it starts
// etcd, kube-apiserver and kube-controller-manager from bin/, installs the
// CRDs, runs the weft controller, applies the samples and shows what a user
// sees with kubectl. Ctrl-C stops everything.
//
//	go run ./hack/demo [-once] [-weft bin/weft]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
)

// demoPods are the pods the demo plays the kubelet for: name, app, version
// and address (documentation range; nothing is sent there).
var demoPods = []struct{ name, app, version, ip string }{
	{"reviews-v1", "reviews", "v1", "192.0.2.11"},
	{"reviews-v2", "reviews", "v2", "192.0.2.12"},
	{"reviews-v3", "reviews", "v3", "192.0.2.13"},
	{"ratings-v1", "ratings", "v1", "192.0.2.21"},
	{"mongodb-0", "mongodb", "v1", "192.0.2.31"},
}

func main() {
	once := flag.Bool("once", false, "show the tour and stop instead of waiting for Ctrl-C")
	weft := flag.String("weft", "bin/weft", "the weft binary to run as the controller")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *weft, *once, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo is a running quick start.
type demo struct {
	env     *testenv.Env
	dir     string
	kubectl string
	out     io.Writer
	procs   []*exec.Cmd
}

func run(ctx context.Context, weft string, once bool, out io.Writer) (err error) {
	weft, err = filepath.Abs(weft)
	if err != nil {
		return err
	}
	if _, err := os.Stat(weft); err != nil {
		return fmt.Errorf("the weft binary %s is missing: run 'make build'", weft)
	}
	d := &demo{out: out}
	if d.dir, err = os.MkdirTemp("", "weft-demo-"); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.stop()) }()

	d.say("Starting etcd and kube-apiserver %s (with weft's CRDs) ...", testenv.K8sVersion)
	if d.env, err = testenv.Start(); err != nil {
		return err
	}
	d.say("API server: %s", d.env.Config.Host)
	d.kubectl = filepath.Join(d.env.AssetsDir(), "kubectl")
	kubeconfig := filepath.Join(d.dir, "kubeconfig")
	if err := d.env.Kubeconfig(kubeconfig); err != nil {
		return err
	}
	d.say("Starting kube-controller-manager (so Services get EndpointSlices) ...")
	if err := d.start("kube-controller-manager", filepath.Join(d.env.AssetsDir(), "kube-controller-manager"),
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=endpointslice-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller"); err != nil {
		return err
	}
	d.say("Starting the weft controller (log: %s) ...", filepath.Join(d.dir, "weft-controller.log"))
	if err := d.start("weft-controller", weft, "controller", "--kubeconfig="+kubeconfig,
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--webhook-port=0", "--log-format=console"); err != nil {
		return err
	}

	root := d.env.Root
	d.say("Applying the workloads the samples name (hack/demo/workloads.yaml) and playing their kubelet ...")
	if err := d.kubectlRun(ctx, "apply", "-f", filepath.Join(root, "hack", "demo", "workloads.yaml")); err != nil {
		return err
	}
	if err := d.startPods(ctx); err != nil {
		return err
	}
	d.say("Applying config/samples ...")
	if err := d.kubectlRun(ctx, "apply", "-k", filepath.Join(root, "config", "samples")); err != nil {
		return err
	}
	if err := d.waitSettled(ctx); err != nil {
		return err
	}

	d.show(ctx, "get", "meshservices,trafficpolicies,peerauthentications", "-A")
	d.show(ctx, "get", "meshservices", "-n", "bookinfo", "-o", "wide")
	d.show(ctx, "describe", "meshservice", "reviews", "-n", "bookinfo")
	d.show(ctx, "describe", "trafficpolicy", "reviews-canary", "-n", "bookinfo")

	d.say("A policy whose weights do not add up is refused at admission:")
	bad := "apiVersion: mesh.weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: bad-split, namespace: bookinfo}\n" +
		"spec:\n  targetRef: {name: reviews}\n  http:\n  - backends: [{subset: v1, weight: 80}, {subset: v2, weight: 10}]\n"
	d.show(ctx, "apply", "-f", "-", "<<"+bad)

	d.say("Sending 10%% of the canary to a subset v4 that reviews does not define: the policy says why it cannot be resolved:")
	d.show(ctx, "patch", "trafficpolicy", "reviews-canary", "-n", "bookinfo", "--type=json",
		"-p", `[{"op": "replace", "path": "/spec/http/1/backends/1/subset", "value": "v4"}]`)
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionResolvedRefs, metav1.ConditionFalse); err != nil {
		return err
	}
	conditions := `jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}`
	d.show(ctx, "get", "trafficpolicy", "reviews-canary", "-n", "bookinfo", "-o", conditions)

	d.say("Adding subset v4 to the reviews MeshService resolves the policy without touching it:")
	d.show(ctx, "patch", "meshservice", "reviews", "-n", "bookinfo", "--type=json",
		"-p", `[{"op": "add", "path": "/spec/subsets/-", "value": {"name": "v4", "labels": {"version": "v4"}}}]`)
	if err := d.waitCondition(ctx, "reviews-canary", meshv1.ConditionResolvedRefs, metav1.ConditionTrue); err != nil {
		return err
	}
	d.show(ctx, "get", "trafficpolicies", "-n", "bookinfo")

	if once {
		return nil
	}
	d.say("The cluster is yours. In another shell:\n\n  export KUBECONFIG=%s\n  %s get meshservices -A\n  %s explain trafficpolicy.spec.http\n",
		kubeconfig, d.kubectl, d.kubectl)
	d.say("Press Ctrl-C to stop everything.")
	<-ctx.Done()
	d.say("Stopping ...")
	return nil
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "\n==> "+format+"\n", args...)
}

// start runs a process in its own process group with its output in a log
// file under the demo's directory.
func (d *demo) start(name, bin string, args ...string) error {
	log, err := os.Create(filepath.Join(d.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	return nil
}

// stop ends the processes (TERM, then KILL after 10 s), the control plane,
// and removes the demo's directory.
func (d *demo) stop() error {
	var errs []error
	for i := len(d.procs) - 1; i >= 0; i-- {
		cmd := d.procs[i]
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
	if d.env != nil {
		if err := d.env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
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
	cmd := exec.CommandContext(ctx, d.kubectl, append([]string{"--kubeconfig", filepath.Join(d.dir, "kubeconfig")}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// startPods creates the demo's pods bound to the demo node and marks them
// Running and Ready, as a kubelet would.
func (d *demo) startPods(ctx context.Context) error {
	c := d.env.Client
	for _, p := range demoPods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: p.name, Labels: map[string]string{"app": p.app, "version": p.version}},
			Spec: corev1.PodSpec{
				NodeName:           "demo-node",
				ServiceAccountName: "default",
				Containers:         []corev1.Container{{Name: p.app, Image: "example.invalid/" + p.app + ":" + p.version}},
			},
		}
		if err := c.Create(ctx, pod); err != nil {
			return fmt.Errorf("creating pod %s: %w", p.name, err)
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
				return err
			}
			now := metav1.Now()
			pod.Status = corev1.PodStatus{
				Phase:     corev1.PodRunning,
				HostIP:    "192.0.2.1",
				HostIPs:   []corev1.HostIP{{IP: "192.0.2.1"}},
				PodIP:     p.ip,
				PodIPs:    []corev1.PodIP{{IP: p.ip}},
				StartTime: &now,
				Conditions: []corev1.PodCondition{
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
					{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				},
			}
			return c.Status().Update(ctx, pod)
		})
		if err != nil {
			return fmt.Errorf("marking pod %s ready: %w", p.name, err)
		}
	}
	return nil
}

// waitSettled waits until every sample MeshService counts its ready
// endpoints and every sample has Ready set for its generation.
func (d *demo) waitSettled(ctx context.Context) error {
	want := map[string]int32{}
	for _, p := range demoPods {
		want[p.app]++
	}
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		list := &meshv1.MeshServiceList{}
		if err := d.env.Client.List(ctx, list, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		if len(list.Items) != len(want) {
			return fmt.Errorf("%d MeshServices, want %d", len(list.Items), len(want))
		}
		for _, ms := range list.Items {
			if ms.Status.Endpoints.Ready != want[ms.Spec.ServiceName] {
				return fmt.Errorf("MeshService %s has %d ready endpoints, want %d", ms.Name, ms.Status.Endpoints.Ready, want[ms.Spec.ServiceName])
			}
			if c := meta.FindStatusCondition(ms.Status.Conditions, meshv1.ConditionReady); c == nil || c.ObservedGeneration != ms.Generation {
				return fmt.Errorf("MeshService %s has no Ready condition yet", ms.Name)
			}
		}
		tps := &meshv1.TrafficPolicyList{}
		if err := d.env.Client.List(ctx, tps, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		for _, tp := range tps.Items {
			if c := meta.FindStatusCondition(tp.Status.Conditions, meshv1.ConditionReady); c == nil || c.ObservedGeneration != tp.Generation {
				return fmt.Errorf("TrafficPolicy %s has no Ready condition yet", tp.Name)
			}
		}
		return nil
	})
}

func (d *demo) waitCondition(ctx context.Context, policy, condType string, st metav1.ConditionStatus) error {
	return testenv.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		tp := &meshv1.TrafficPolicy{}
		if err := d.env.Client.Get(ctx, client.ObjectKey{Namespace: "bookinfo", Name: policy}, tp); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(tp.Status.Conditions, condType); c == nil || c.Status != st {
			return fmt.Errorf("%s of %s is not %s yet", condType, policy, st)
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
