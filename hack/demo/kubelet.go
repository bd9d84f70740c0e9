package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
)

const (
	reviewsHost = "reviews.bookinfo.svc.cluster.local:9080"
	ratingsHost = "ratings.bookinfo.svc.cluster.local:9080"
	// servePort is the port of the Services reviews and ratings (and so
	// of their pods, as the Services set no targetPort).
	servePort = "9080"
	// callsPerSecond is the client's rate: enough for a split to show
	// within a few seconds, little enough for a laptop.
	callsPerSecond = 250
)

// What a demo pod runs.
type role int

const (
	placeholder role = iota // nothing: the samples name it, nothing calls it
	server                  // "demo serve" on the pod's address
	caller                  // "demo client", calling reviews
)

// When the demo starts a pod.
type stage int

const (
	withWorkloads stage = iota // before the samples are applied
	withClient                 // once they are in force
	duringTour                 // a new version rolled out during the tour
	forRecovery                // a failing ratings version, for the failure-recovery tour
	forTimeout                 // a slow ratings version, for the timeout
)

// pod is one of the pods the demo plays the kubelet for.
type pod struct {
	name, app, version, ip, serviceAccount string
	role                                   role
	calls                                  string // what a server calls for every call it serves
	stage                                  stage
	// misbehave are a server's flags that make it fail or slow.
	misbehave []string
}

// demoPods have documentation-range addresses, which exist only on the
// loopback interface of the demo's network namespace.
var demoPods = []pod{
	{"ratings-v1", "ratings", "v1", "192.0.2.21", "ratings", server, "", withWorkloads, nil},
	{"reviews-v1", "reviews", "v1", "192.0.2.11", "reviews", server, ratingsHost, withWorkloads, nil},
	{"reviews-v2", "reviews", "v2", "192.0.2.12", "reviews", server, ratingsHost, withWorkloads, nil},
	{"mongodb-0", "mongodb", "v1", "192.0.2.31", "default", placeholder, "", withWorkloads, nil},
	{"productpage-v1", "productpage", "v1", "192.0.2.10", "productpage", caller, reviewsHost, withClient, nil},
	{"reviews-v4", "reviews", "v4", "192.0.2.14", "reviews", server, ratingsHost, duringTour, nil},
	{"ratings-v2", "ratings", "v2", "192.0.2.22", "ratings", server, "", forRecovery, []string{"-fail-every", "3"}},
	{"ratings-v3", "ratings", "v3", "192.0.2.23", "ratings", server, "", forTimeout, []string{"-delay", "1500ms"}},
}

func podAddresses() []string {
	var out []string
	for _, p := range demoPods {
		out = append(out, p.ip)
	}
	return out
}

// proxyID is a pod's xDS node id.
func (p pod) proxyID() string { return wire.NodeID(p.name, "bookinfo") }

// proxies lists the node ids of the pods of the given stages that talk to
// weft's xDS server: every one that runs.
func proxies(stages ...stage) []string {
	var out []string
	for _, p := range demoPods {
		for _, s := range stages {
			if p.stage == s && p.role != placeholder {
				out = append(out, p.proxyID())
			}
		}
	}
	return out
}

// startPods starts the pods of a stage as a kubelet would: it creates
// the pod bound to the demo node, gives it its token and certificate,
// runs its process (unless the demo runs without live traffic), marks it
// Running with its address (from which kube-controller-manager makes
// EndpointSlices, not ready yet), waits until a server serves (its
// readiness probe: weft has sent it the Listener for its address), and
// marks it Ready.
func (d *demo) startPods(ctx context.Context, st stage) error {
	for _, p := range demoPods {
		if p.stage != st {
			continue
		}
		// The pod exists before its process runs: its token and its
		// certificate are bound to it.
		obj, err := d.createPod(ctx, p)
		if err != nil {
			return err
		}
		if d.traffic != nil && p.role != placeholder {
			if err := d.markStatus(ctx, p, false); err != nil {
				return err
			}
			if err := d.runPod(ctx, p, obj); err != nil {
				return fmt.Errorf("pod %s: %w", p.name, err)
			}
		}
		if err := d.markStatus(ctx, p, true); err != nil {
			return err
		}
	}
	return nil
}

// runPod gives a pod its token and certificate files and a gRPC xDS
// bootstrap of its own, starts its process and waits until it is ready.
func (d *demo) runPod(ctx context.Context, p pod, obj *corev1.Pod) error {
	if err := d.writeCredentials(ctx, p, obj); err != nil {
		return err
	}
	bootstrap, err := d.writeBootstrap(p)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the demo's own binary: %w", err)
	}
	ready := filepath.Join(d.dir, "serving-"+p.name)
	args := []string{"serve", "-name", p.name, "-listen", net.JoinHostPort(p.ip, servePort), "-ready-file", ready}
	if p.calls != "" {
		args = append(args, "-calls", p.calls)
	}
	args = append(args, p.misbehave...)
	if p.role == caller {
		args = []string{"client", "-target", p.calls, "-rate", fmt.Sprint(callsPerSecond)}
	}
	cmd := exec.Command(exe, args...)
	// grpc-go sends the bootstrap's call credentials (the pod's token)
	// only when told to.
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrap, "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true")
	if p.role == caller {
		return d.startClient(p.name, cmd)
	}
	if err := d.start(p.name, cmd); err != nil {
		return err
	}
	return testenv.Eventually(ctx, time.Minute, func(context.Context) error {
		if _, err := os.Stat(ready); err != nil {
			return fmt.Errorf("%s does not serve yet (no Listener from weft for %s:%s; its log: %s)",
				p.name, p.ip, servePort, filepath.Join(d.dir, p.name+".log"))
		}
		return nil
	})
}

// startClient runs the client with its reports going to d.traffic.
func (d *demo) startClient(name string, cmd *exec.Cmd) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout = w
	err = d.start(name, cmd)
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	go func() {
		defer r.Close()
		d.traffic.read(r)
	}()
	return nil
}

// writeBootstrap writes the gRPC xDS bootstrap of a pod as weft's
// injector would: weft's xDS server over TLS checked against the mesh
// root, the pod's token as call credentials, the pod's node id
// ("<pod>.<namespace>") and flavour, the name template of a server's
// Listener, and the certificate provider that weft's TLS settings name,
// which reads the pod's certificate files.
func (d *demo) writeBootstrap(p pod) (string, error) {
	certs := d.certsOf(p)
	b, err := json.MarshalIndent(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": net.JoinHostPort(xdsHost, xdsPort),
			"channel_creds": []any{map[string]any{"type": "tls", "config": map[string]string{
				"ca_certificate_file": d.rootCAFile(),
			}}},
			"call_creds": []any{map[string]any{"type": "jwt_token_file", "config": map[string]string{
				"jwt_token_file": d.tokenFile(p),
			}}},
			"server_features": []string{"xds_v3"},
		}},
		"node":                                   map[string]any{"id": p.proxyID(), "metadata": map[string]any{wire.MetaFlavour: string(wire.FlavourGRPC)}},
		"server_listener_resource_name_template": wire.ServerListenerName("%s"),
		"certificate_providers": map[string]any{wire.CertProviderInstance: map[string]any{
			"plugin_name": "file_watcher",
			"config": map[string]any{
				"certificate_file": certs.Chain(), "private_key_file": certs.Key(),
				"ca_certificate_file": certs.Roots(), "refresh_interval": "10s",
			},
		}},
	}, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(d.dir, "bootstrap-"+p.name+".json")
	return path, os.WriteFile(path, b, 0o644)
}

// probe waits until addr accepts TCP connections.
func probe(ctx context.Context, addr string) error {
	return testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// createPod creates a pod bound to the demo node.
func (d *demo) createPod(ctx context.Context, p pod) (*corev1.Pod, error) {
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: p.name, Labels: map[string]string{"app": p.app, "version": p.version}},
		Spec: corev1.PodSpec{
			NodeName:           "demo-node",
			ServiceAccountName: p.serviceAccount,
			Containers:         []corev1.Container{{Name: p.app, Image: "example.invalid/" + p.app + ":" + p.version}},
		},
	}
	if err := d.env.Client.Create(ctx, obj); err != nil {
		return nil, fmt.Errorf("creating pod %s: %w", p.name, err)
	}
	return obj, nil
}

// removePod deletes a pod as a kubelet whose pod stopped would have it
// gone (at once, no grace period: nothing is left to drain), and stops its
// process once its endpoint is gone from the EndpointSlices.
func (d *demo) removePod(ctx context.Context, name string) error {
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name}}
	if err := d.env.Client.Delete(ctx, obj, client.GracePeriodSeconds(0)); err != nil {
		return fmt.Errorf("deleting pod %s: %w", name, err)
	}
	err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var list discoveryv1.EndpointSliceList
		if err := d.env.Client.List(ctx, &list, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		for _, sl := range list.Items {
			for _, ep := range sl.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Name == name {
					return fmt.Errorf("pod %s is still an endpoint of %s", name, sl.Labels[discoveryv1.LabelServiceName])
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	d.creds.mu.Lock()
	delete(d.creds.pods, name)
	d.creds.mu.Unlock()
	if cmd := d.byName[name]; cmd != nil {
		stopProcess(cmd)
		d.procs = slices.DeleteFunc(d.procs, func(c *exec.Cmd) bool { return c == cmd })
		delete(d.byName, name)
	}
	return nil
}

// markStatus marks a pod Running with its address, and Ready or not.
func (d *demo) markStatus(ctx context.Context, p pod, ready bool) error {
	c := d.env.Client
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: p.name}}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		obj.Status = runningStatus(p.ip, ready)
		return c.Status().Update(ctx, obj)
	})
	if err != nil {
		return fmt.Errorf("marking pod %s running (ready: %v): %w", p.name, ready, err)
	}
	return nil
}

func runningStatus(ip string, ready bool) corev1.PodStatus {
	now := metav1.Now()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    nodeIP,
		HostIPs:   []corev1.HostIP{{IP: nodeIP}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: st, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: st, LastTransitionTime: now},
		},
	}
}
