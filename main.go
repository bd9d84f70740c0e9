// Command weft is weft's one binary: the controller, the traffic-capture
// init command, and the user commands.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/cabundle"
	"github.com/weftmesh/weft/internal/cli"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/identity/casource"
	"github.com/weftmesh/weft/internal/inject"
	"github.com/weftmesh/weft/internal/leader"
	"github.com/weftmesh/weft/internal/memlimit"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/redirect"
	"github.com/weftmesh/weft/internal/replicas"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
)

const usage = `weft is a service mesh for Kubernetes.

Usage:
  weft <command> [flags]

Commands:
  controller     run the control plane (reconcilers, xDS server, CA, injection webhook)
  check          pre-flight and analysis of the mesh: the install, the webhook, the CA, and misconfigured objects (exit 1 on an error)
  config         print what the xDS server sent a pod's proxy and what it acknowledged, per type (YAML or JSON)
  describe       say what shapes a pod's proxy: identity, certificate, MeshServices, TrafficPolicies, PeerAuthentication, allow rules
  trace          walk a request through a pod's proxy configuration: listener, route, clusters, policy, authorization
  ca             rotate the mesh's root CA (rotate: trust a new root; promote: sign with it; retire: drop the old), or show the trust (status)
  init-redirect  install a meshed pod's traffic-capture rules (run by the injected init container)
  inject         print pods and workloads from a file (or - for stdin) as weft would inject them
  status         list the proxies connected to the xDS server and what they acknowledged
  version        print the version

Run "weft <command> -h" for a command's flags.
`

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return // -h printed the usage
		}
		fmt.Fprintln(os.Stderr, "weft:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "controller":
		return runController(ctx, args[1:], stderr)
	case "status":
		fs := flag.NewFlagSet("weft status", flag.ContinueOnError)
		fs.SetOutput(stderr)
		addr := fs.String("xds-address", "127.0.0.1:"+strconv.Itoa(wire.PortXDSStatus),
			"address of weft's proxy status (CSDS): the controller's --xds-status-bind-address (with --xds-auth=none, its --xds-bind-address)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return cli.Status(ctx, *addr, stdout)
	case "config":
		return runConfig(ctx, args[1:], stdout, stderr)
	case "trace":
		return runTrace(ctx, args[1:], stdout, stderr)
	case "describe":
		return runDescribe(ctx, args[1:], stdout, stderr)
	case "inject":
		return runInject(args[1:], os.Stdin, stdout, stderr)
	case "ca":
		return runCA(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "init-redirect":
		return redirect.RunCommand(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version.String())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// controllerOptions are the controller's flags.
type controllerOptions struct {
	kubeconfig       string
	metricsAddr      string
	probeAddr        string
	leaderElect      bool
	leaderElectionNS string
	meshNamespace    string
	defaultInbound   wire.DefaultInbound
	logLevel         string
	logFormat        string
	xdsAddr          string
	xdsAuth          string
	xdsStatusAddr    string
	drainAddr        string
	drainPeers       bool
	enableHTTP2      bool
	leafTTL          time.Duration
	certDelivery     string
	webhookPort      int
	webhookCertDir   string
	caSource         string
	issuer           cmmeta.IssuerReference
	trustBundle      string
	issuerQPS        float64
	issuerBurst      int
	trustWarning     time.Duration
	observe          translate.Observability
	webhookService   string
	webhookConfig    string
	inject           inject.Config
}

func (o *controllerOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig; default: $KUBECONFIG, then the in-cluster config")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443",
		"address of the metrics endpoint, served over HTTPS to authenticated and authorized callers only; \"0\" turns it off")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"serve HTTP/2 on the webhook and metrics servers (off: HTTP/1.1 only, against HTTP/2 rapid-reset and stream floods)")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"elect one leader among the replicas to run the reconcilers (serving parts run on every replica)")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "",
		"namespace of the leader election Lease; default: the pod's namespace, or --mesh-namespace outside a cluster")
	fs.StringVar(&o.meshNamespace, "mesh-namespace", "weft-system",
		"the control plane's namespace; a PeerAuthentication without selector here covers the whole mesh")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, error, or a number (higher is more verbose)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.DurationVar(&o.leafTTL, "leaf-ttl", identity.DefaultLeafTTL,
		"lifetime of the workload certificates served to sidecars over SDS (renewed at half-life; between 1m and 168h)")
	fs.StringVar(&o.xdsStatusAddr, "xds-status-bind-address", "127.0.0.1:"+strconv.Itoa(wire.PortXDSStatus),
		"address of the proxies' status (CSDS, what weft status reads) with --xds-auth=token: a loopback address only (it has no authentication), reached with kubectl port-forward; empty turns it off")
	fs.StringVar(&o.xdsAuth, "xds-auth", "token",
		"how xDS streams prove who they are: token (TLS from the mesh CA, and the pod's projected ServiceAccount token checked with a TokenReview) or none (loopback only)")
	fs.StringVar(&o.xdsAddr, "xds-bind-address", "",
		"address of the xDS (ADS) server, e.g. 127.0.0.1:15012 or :15012; empty turns it off. With --xds-auth=none, a loopback address only")
	fs.StringVar(&o.drainAddr, "drain-bind-address", "",
		"address of the drain endpoint that terminating pods' pre-stop hooks wait on (HTTPS, authenticated as xDS streams are), e.g. :15014; empty turns it off. Needs --xds-bind-address")
	fs.BoolVar(&o.drainPeers, "drain-peers", true,
		"with --drain-bind-address: a drain waits for every live replica's word on its own proxies, kept in a Lease per replica beside the leader Lease and renewed every 2s; false: a drain covers only the proxies of the replica that answers, and no Lease is kept")
	fs.StringVar(&o.caSource, "ca", "builtin",
		"the mesh CA: builtin (weft makes a root in the Secret weft-root-ca on first start), external (cert-manager's Certificate, or the user, keeps a CA in that Secret: tls.crt, tls.key, ca.crt; weft waits for it and takes each renewal) or cert-manager (weft holds no CA: --issuer-name signs every certificate through a CertificateRequest; SDS delivery only)")
	fs.StringVar(&o.issuer.Name, "issuer-name", "",
		"with --ca=cert-manager: the Issuer (in --mesh-namespace) or ClusterIssuer that signs the workloads' and the controller's certificates")
	fs.StringVar(&o.issuer.Kind, "issuer-kind", "Issuer", "with --ca=cert-manager: the issuer's kind: Issuer, ClusterIssuer, or an external issuer's own kind")
	fs.StringVar(&o.issuer.Group, "issuer-group", "cert-manager.io", "with --ca=cert-manager: the issuer's API group (an external issuer's own group)")
	fs.StringVar(&o.trustBundle, "trust-bundle", identity.DefaultTrustBundle,
		"with --ca=cert-manager: the ConfigMap in --mesh-namespace whose key ca.crt holds the roots the issuer's certificates chain to (trust-manager's Bundle target, or kept by hand); followed without a restart")
	fs.Float64Var(&o.issuerQPS, "issuer-qps", 5, "with --ca=cert-manager: CertificateRequests created per second at most, by each replica")
	fs.DurationVar(&o.trustWarning, "trust-expiry-warning", controllers.DefaultTrustWarning,
		"how long before a trust anchor or the signing CA expires that the MeshTrust mesh says CAExpiring=True and TrustExpiring Events begin")
	fs.IntVar(&o.issuerBurst, "issuer-burst", 20, "with --ca=cert-manager: CertificateRequests created at once before --issuer-qps applies")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the sidecar-injection webhook (HTTPS); 0 turns injection off")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "",
		"directory with the webhook's tls.crt and tls.key, reloaded when they change (cert-manager); empty: the mesh CA signs the webhook's certificate in memory and weft fills the caBundle of --webhook-configuration")
	fs.StringVar(&o.webhookService, "webhook-service", "weft-controller",
		"name of the Service in --mesh-namespace through which the API server calls the webhook (the DNS names of weft's own webhook certificate)")
	fs.StringVar(&o.webhookConfig, "webhook-configuration", "weft-injector",
		"MutatingWebhookConfiguration whose caBundle weft keeps equal to the mesh roots when it signs the webhook's certificate itself; empty: none")
	o.inject = inject.DefaultConfig()
	fs.StringVar(&o.inject.TrustDomain, "trust-domain", o.inject.TrustDomain, "SPIFFE trust domain of the mesh")
	fs.Func("default-inbound", "who may call a MeshService without allow rules, unless its namespace's label "+wire.LabelDefaultInbound+
		" says: all (default), namespace (the mesh identities of its own namespace) or deny (nobody)", func(v string) error {
		d, err := wire.ParseDefaultInbound(v)
		o.defaultInbound = d
		return err
	})
	fs.StringVar(&o.inject.ProxyImage, "proxy-image", o.inject.ProxyImage, "stock Envoy image injected as the sidecar (pin it)")
	fs.StringVar(&o.inject.InitImage, "init-image", o.inject.InitImage, "weft image whose init-redirect command installs the capture rules")
	fs.StringVar(&o.inject.XDSHost, "xds-host", o.inject.XDSHost, "host name proxies use to reach the xDS server")
	fs.Func("xds-port", fmt.Sprintf("port proxies use to reach the xDS server at --xds-host (the Service's port; default %d)", wire.PortXDS),
		func(s string) error {
			p, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				return err
			}
			o.inject.XDSPort = int32(p)
			return nil
		})
	fs.Func("drain-port", fmt.Sprintf("port pods use to reach the drain endpoint at --xds-host (the Service's port; default %d); 0: the injector adds no pre-stop wait", wire.PortDrain),
		func(s string) error {
			p, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				return err
			}
			o.inject.DrainPort = int32(p)
			return nil
		})
	fs.StringVar(&o.observe.AccessLogFormat, "access-log-format", "",
		"sidecars' access logs to their stdout: json, or an Envoy format string; empty turns them off")
	fs.StringVar(&o.observe.TracingEndpoint, "tracing-endpoint", "",
		"an OpenTelemetry collector (OTLP/gRPC, host:port) that sidecars and proxyless gRPC workloads send traces to; empty turns tracing off")
	fs.Float64Var(&o.observe.TracingSampling, "tracing-sampling", 1, "percentage of requests traced (0-100)")
	fs.StringVar(&o.inject.MetricsEndpoint, "metrics-endpoint", "",
		"an OpenTelemetry collector (OTLP/gRPC, host:port) that proxyless gRPC workloads send metrics to; empty: none")
	fs.Func("proxy-requests", "the sidecar's resource requests, e.g. cpu=100m,memory=128Mi", func(v string) error {
		return parseResources(v, &o.inject.ProxyResources.Requests)
	})
	fs.Func("proxy-limits", "the sidecar's resource limits, e.g. memory=512Mi", func(v string) error {
		return parseResources(v, &o.inject.ProxyResources.Limits)
	})
	o.certDelivery = "auto"
	fs.Func("cert-delivery", "how workloads get certificates: auto (pod certificates where the API server serves them, else SDS), sds or podCertificate (default auto)", func(v string) error {
		o.certDelivery = v
		return nil
	})
}

// parseResources reads "cpu=100m,memory=128Mi" into a resource list (an
// empty value clears it).
func parseResources(v string, into *corev1.ResourceList) error {
	list := corev1.ResourceList{}
	for _, kv := range strings.Split(v, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, qty, ok := strings.Cut(kv, "=")
		if !ok || (name != string(corev1.ResourceCPU) && name != string(corev1.ResourceMemory)) {
			return fmt.Errorf("%q: want cpu=<quantity> or memory=<quantity>", kv)
		}
		q, err := resource.ParseQuantity(qty)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		list[corev1.ResourceName(name)] = q
	}
	*into = list
	return nil
}

// chooseDelivery resolves --cert-delivery: auto picks pod certificates
// where the API server serves them.
func chooseDelivery(flag string, podCertificates bool) (wire.CertDelivery, error) {
	switch flag {
	case "auto":
		if podCertificates {
			return wire.DeliveryPodCertificate, nil
		}
		return wire.DeliverySDS, nil
	case string(wire.DeliverySDS):
		return wire.DeliverySDS, nil
	case string(wire.DeliveryPodCertificate):
		if !podCertificates {
			return "", errors.New("--cert-delivery=podCertificate: the API server does not serve PodCertificateRequests (certificates.k8s.io/v1)")
		}
		return wire.DeliveryPodCertificate, nil
	}
	return "", fmt.Errorf("--cert-delivery: %q is none of auto, sds, podCertificate", flag)
}

func (o *controllerOptions) logger() (zap.Opts, error) {
	var level zapcore.Level
	switch o.logLevel {
	case "debug":
		level = zapcore.DebugLevel
	case "info":
		level = zapcore.InfoLevel
	case "error":
		level = zapcore.ErrorLevel
	default:
		var n int
		if _, err := fmt.Sscanf(o.logLevel, "%d", &n); err != nil || n < 0 {
			return nil, fmt.Errorf("--log-level: %q is not debug, info, error or a non-negative number", o.logLevel)
		}
		level = zapcore.Level(-n)
	}
	var enc zap.Opts
	switch o.logFormat {
	case "json":
		enc = zap.JSONEncoder()
	case "console":
		enc = zap.ConsoleEncoder()
	default:
		return nil, fmt.Errorf("--log-format: %q is not json or console", o.logFormat)
	}
	return func(zo *zap.Options) {
		enc(zo)
		zo.Level = level
	}, nil
}

// checkUnauthenticated refuses to serve without authentication beyond
// loopback: the proxies' status (CSDS: every proxy's configuration and
// certificates, never a key), and xDS and the drain endpoint with
// --xds-auth=none. On
// loopback only the pod's own containers reach them, and kubectl
// port-forward, which the API server authorizes.
func (o *controllerOptions) checkUnauthenticated() error {
	if o.xdsStatusAddr != "" && !loopback(o.xdsStatusAddr) {
		return fmt.Errorf("--xds-status-bind-address: %q is not a loopback address; the proxies' status has no authentication, "+
			"so it listens on loopback only (127.0.0.1 or [::1]; reach it with kubectl port-forward)", o.xdsStatusAddr)
	}
	if o.xdsAuth == "none" && o.xdsAddr != "" && !loopback(o.xdsAddr) {
		return fmt.Errorf("--xds-bind-address: %q is not a loopback address; with --xds-auth=none xDS has no authentication, "+
			"so it listens on loopback only (127.0.0.1 or [::1])", o.xdsAddr)
	}
	if o.xdsAuth == "none" && o.drainAddr != "" && !loopback(o.drainAddr) {
		return fmt.Errorf("--drain-bind-address: %q is not a loopback address; with --xds-auth=none the drain endpoint has no authentication, "+
			"so it listens on loopback only (127.0.0.1 or [::1])", o.drainAddr)
	}
	return nil
}

// loopback says whether a listen address is on a loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (o *controllerOptions) restConfig() (*rest.Config, error) {
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		if cfg.QPS == 0 {
			// As ctrl.GetConfig has it in the cluster: no client-side
			// limit (client-go's would be 5 requests a second), the API
			// server's priority and fairness decides.
			cfg.QPS = -1
		}
		return cfg, nil
	}
	return ctrl.GetConfig()
}

// operatorClient is the client of the CLI's commands: the operator's
// credentials, weft's kinds, no cache.
func (o *controllerOptions) operatorClient() (client.Client, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: newScheme()})
}

// runCA takes the built-in root through a rotation: a new root trusted
// beside the old ("weft ca rotate"), then signing ("weft ca promote"), then
// the old roots dropped ("weft ca retire").
func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "status" {
		return runCAStatus(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "promote" && args[0] != "retire") {
		return errors.New("usage: weft ca rotate|promote|retire [--kubeconfig F] [--mesh-namespace N] [--trust-domain D], or weft ca status [--kubeconfig F] [--namespace N]")
	}
	fs := flag.NewFlagSet("weft ca "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o controllerOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster or $KUBECONFIG)")
	fs.StringVar(&o.meshNamespace, "mesh-namespace", "weft-system", "the control plane's namespace")
	trustDomain := fs.String("trust-domain", "cluster.local", "SPIFFE trust domain of the mesh")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := o.operatorClient()
	if err != nil {
		return err
	}
	var root *identity.Root
	next := ""
	switch args[0] {
	case "rotate":
		root, err = identity.RotateRoot(ctx, c, o.meshNamespace, *trustDomain, time.Now())
		next = "Next: once every namespace and proxy trusts the new root (weft ca status --namespace N), weft ca promote."
	case "promote":
		root, err = identity.PromoteRoot(ctx, c, o.meshNamespace)
		next = "Next: once every leaf was renewed by the new root (weft status shows each proxy's), weft ca retire."
	default:
		root, err = identity.RetireRoots(ctx, c, o.meshNamespace)
	}
	if err != nil {
		return err
	}
	trusted, err := identity.ParseCerts(root.Bundle)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Signing with %q (serial %x, until %s); %d root(s) trusted.\n",
		root.CA.Cert.Subject.CommonName, root.CA.Cert.SerialNumber, root.CA.Cert.NotAfter.UTC().Format(time.RFC3339), len(trusted))
	if next != "" {
		fmt.Fprintln(stdout, next)
	}
	return nil
}

// issuerName is how the MeshTrust names an issuer: kind/name, with the
// group when it is not cert-manager's.
func issuerName(ref cmmeta.IssuerReference) string {
	if ref.Group != "" && ref.Group != "cert-manager.io" {
		return ref.Kind + "." + ref.Group + "/" + ref.Name
	}
	return ref.Kind + "/" + ref.Name
}

// runCheck prints what "weft check" finds and fails on an error.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: weft check [-n namespace] [--kubeconfig file]

Pre-flight: the API server's version and pod-certificate support, weft's CRDs, the controller's
Deployment and how it certifies workloads, the trust state and CA expiry, the injector's webhook
configuration and caBundle, and a server-side dry run of a pod in a namespace that opted in (the
API server calls the webhook). Analysis of the mesh's objects: what the model refuses or cannot
resolve, conflicts, allow rules that cannot hold, routes to subsets without endpoints, STRICT
services beside pods without a proxy, allow rules naming ServiceAccounts or namespaces that do not
exist, PeerAuthentications that select no pod. Each finding names the object and the fix; the exit
status is 1 when there is an error (for CI).

Flags:
`)
		fs.PrintDefaults()
	}
	var o controllerOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster or $KUBECONFIG)")
	co := cli.CheckOptions{Now: time.Now()}
	fs.StringVar(&co.MeshNamespace, "mesh-namespace", "weft-system", "the control plane's namespace")
	fs.StringVar(&co.Deployment, "deployment", "weft-controller", "the controller's Deployment in --mesh-namespace")
	for _, name := range []string{"n", "namespace"} {
		fs.StringVar(&co.Namespace, name, "", "analyze only this namespace's objects (and try the webhook there); default: all")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("weft check takes no arguments, got %q", fs.Args())
	}
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: newScheme()})
	if err != nil {
		return err
	}
	if dc, err := discovery.NewDiscoveryClientForConfig(cfg); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			co.Major, co.Minor = v.Major, v.Minor
		}
	}
	_, pcrErr := c.RESTMapper().RESTMapping(schema.GroupKind{Group: "certificates.k8s.io", Kind: "PodCertificateRequest"}, "v1")
	co.PodCertificates = pcrErr == nil
	if n := cli.PrintFindings(stdout, cli.Check(ctx, c, co)); n > 0 {
		return fmt.Errorf("%d error(s) found", n)
	}
	return nil
}

// podFlags are the flags of the commands about one pod's proxy.
type podFlags struct {
	kubeconfig, namespace, xdsAddr string
}

func (p *podFlags) bind(fs *flag.FlagSet) {
	fs.StringVar(&p.kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
	for _, name := range []string{"n", "namespace"} {
		fs.StringVar(&p.namespace, name, "", "the pod's namespace (default: the kubeconfig context's, else default)")
	}
	fs.StringVar(&p.xdsAddr, "xds-address", "127.0.0.1:"+strconv.Itoa(wire.PortXDSStatus),
		"address of weft's proxy status (CSDS): the controller's --xds-status-bind-address, reached with kubectl port-forward (with --xds-auth=none, its --xds-bind-address)")
}

// client is a client of the API server the kubeconfig names.
func (p *podFlags) client() (client.Client, error) {
	co := controllerOptions{kubeconfig: p.kubeconfig}
	return co.operatorClient()
}

// bindController binds the flags that find the controller whose
// Deployment's flags set the model's settings (weft describe, trace).
func bindController(fs *flag.FlagSet) *cli.Controller {
	ctl := &cli.Controller{}
	fs.StringVar(&ctl.Namespace, "mesh-namespace", wire.DefaultMeshNamespace, "the control plane's namespace")
	fs.StringVar(&ctl.Deployment, "deployment", "weft-controller", "the controller's Deployment in --mesh-namespace (its flags set the model's settings)")
	return ctl
}

// ns is the namespace the command is about: -n, else the kubeconfig
// context's, else default.
func (p *podFlags) ns() string {
	if p.namespace != "" {
		return p.namespace
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if p.kubeconfig != "" {
		rules.ExplicitPath = p.kubeconfig
	}
	if ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).Namespace(); err == nil && ns != "" {
		return ns
	}
	return corev1.NamespaceDefault
}

// parseWithArgs parses flags that may come before, between or after the
// positional arguments, which it returns.
func parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// runConfig prints what a pod's proxy was sent ("weft config").
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: weft config <pod> [-n namespace] [-o yaml|json] [--type listeners,routes,clusters,endpoints,secrets]\n\n"+
			"Prints what the xDS server sent the pod's proxy (node id <pod>.<namespace>) and what it acknowledged, per type:\n"+
			"the version sent, the version acknowledged, a rejection, and each resource as sent. Secrets are shown\n"+
			"with their certificates only.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var p podFlags
	p.bind(fs)
	format := fs.String("o", "yaml", "output format: yaml or json")
	types := fs.String("type", "", "only these types, comma-separated: listeners, routes, clusters, endpoints, secrets")
	pos, err := parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("weft config takes one pod")
	}
	return cli.Config(ctx, p.xdsAddr, pos[0], p.ns(), *format, cli.SplitList(*types), stdout)
}

// runDescribe says what shapes a pod's proxy ("weft describe").
func runDescribe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft describe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: weft describe <pod> [-n namespace]

Says what shapes the pod's proxy configuration, from the cluster's objects (the model the controller
builds from them) and the proxy's status on the xDS server: its identity and certificate, the
MeshServices it serves (allow rules, the PeerAuthentication that sets each port's mTLS mode, the
TrafficPolicy in force there), the MeshServices it may call (their TrafficPolicies, the
PeerAuthentications behind their TLS) and those that keep it out; then every shaping object with
the generation in force, its current generation, and whether the proxy acknowledged it.

Flags:
`)
		fs.PrintDefaults()
	}
	var p podFlags
	p.bind(fs)
	ctl := bindController(fs)
	pos, err := parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("weft describe takes one pod")
	}
	c, err := p.client()
	if err != nil {
		return err
	}
	d, err := cli.DescribePod(ctx, c, cli.DescribeOptions{Addr: p.xdsAddr, Pod: pos[0], Namespace: p.ns(), Controller: *ctl})
	if err != nil {
		return err
	}
	return cli.WriteDescription(stdout, d)
}

// runTrace walks a request through a pod's proxy ("weft trace").
func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: weft trace <pod> <request> [-n namespace] [-H name=value]... [-X method] [--from namespace/serviceaccount | --plaintext]

Walks a request through the configuration the xDS server sent the pod's proxy, as the proxy would:
listener and filter chain, virtual host, route (timeout, retries, hashing, mirrors, fault), the clusters
with their weights, endpoints and TLS, and the TrafficPolicy (with its generation) that set the route.
The request is a URL:
  grpc://reviews.shop.svc.cluster.local:9080/weft.test.Reviews/Get   a gRPC call (proxyless client or sidecar)
  http://ratings.shop.svc.cluster.local:9090/ratings/1               an HTTP request (sidecar: by the service's
                                                                     cluster IP, or give the address itself)
  tcp://10.96.0.12:5432                                              a TCP connection (sidecar)
With --from (or --plaintext) the request comes into the pod instead, on the URL's port: the inbound
filter chain, the STRICT handshake and the allow rules decide, e.g.
  weft trace reviews-v1 -n shop grpc://:9080/weft.test.Reviews/Get --from shop/productpage

Flags:
`)
		fs.PrintDefaults()
	}
	var p podFlags
	p.bind(fs)
	var headers []string
	fs.Func("H", "a request header, name=value (repeatable)", func(v string) error {
		headers = append(headers, v)
		return nil
	})
	method := fs.String("X", "", "the request's method (default POST for grpc://, GET for http://)")
	from := fs.String("from", "", "trace a request into the pod from this caller over mTLS: <namespace>/<serviceaccount> or a SPIFFE ID")
	plaintext := fs.Bool("plaintext", false, "trace a request into the pod from a caller without mTLS")
	ctl := bindController(fs)
	pos, err := parseWithArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		fs.Usage()
		return errors.New("weft trace takes a pod and a request")
	}
	req, err := cli.ParseTraceRequest(pos[1], headers, *method, *from, *plaintext)
	if err != nil {
		return err
	}
	o := cli.TraceOptions{Addr: p.xdsAddr, Pod: pos[0], Namespace: p.ns(), Controller: *ctl}
	if c, err := p.client(); err == nil {
		o.Objects = c
	}
	rep, err := cli.TraceProxy(ctx, o, req)
	if err != nil {
		return err
	}
	return cli.WriteTrace(stdout, rep)
}

// runCAStatus prints the mesh's trust ("weft ca status").
func runCAStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft ca status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o controllerOptions
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster or $KUBECONFIG)")
	namespace := fs.String("namespace", "", "also check that this namespace's workloads mount the anchors (its ConfigMap "+wire.BundleConfigMap+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := o.operatorClient()
	if err != nil {
		return err
	}
	return cli.CAStatus(ctx, c, *namespace, time.Now(), stdout)
}

// newScheme registers every kind the controller reads or writes.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	return s
}

func runController(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o controllerOptions
	o.bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	logOpts, err := o.logger()
	if err != nil {
		return err
	}
	log := zap.New(zap.WriteTo(stderr), logOpts)
	ctrl.SetLogger(log)
	if soft, err := memlimit.Apply(); err != nil {
		log.Error(err, "Could not read the container's memory limit; the Go runtime has no soft limit")
	} else if soft > 0 {
		log.Info("Go memory limit set from the container's", "bytes", soft, "fraction", memlimit.Fraction)
	}

	if o.trustWarning <= 0 {
		return fmt.Errorf("--trust-expiry-warning: %v; it must be positive", o.trustWarning)
	}
	if err := o.checkUnauthenticated(); err != nil {
		return err
	}
	// Proxyless workloads take the mesh's tracing from the injector.
	o.inject.TracingEndpoint, o.inject.TracingSampling = o.observe.TracingEndpoint, o.observe.TracingSampling
	if err := o.inject.ValidateTelemetry(); err != nil {
		return err
	}
	if o.webhookPort != 0 {
		o.inject.MeshNamespace = o.meshNamespace
		if err := o.inject.Validate(); err != nil {
			return err
		}
	}
	if err := o.observe.Validate(); err != nil {
		return err
	}
	if err := (casource.Config{Source: o.caSource, Issuer: o.issuer}).Validate(); err != nil {
		return err
	}
	if o.caSource == casource.CertManager {
		// Pod certificates need a CA weft holds (the kubelet's request
		// carries no CSR an issuer would sign): SDS only.
		switch o.certDelivery {
		case "auto":
			o.certDelivery = string(wire.DeliverySDS)
		case string(wire.DeliveryPodCertificate):
			return errors.New("--cert-delivery=podCertificate: with --ca=cert-manager weft holds no CA to sign pod certificates with; use sds")
		}
		if o.issuerQPS <= 0 || o.issuerBurst < 1 {
			return fmt.Errorf("--issuer-qps and --issuer-burst: %v and %d; both must be positive", o.issuerQPS, o.issuerBurst)
		}
	}
	cfg, err := o.restConfig()
	if err != nil {
		return fmt.Errorf("loading the API server config: %w", err)
	}
	scheme := newScheme()

	// HTTP/2 stays off on the webhook and metrics servers unless asked for:
	// their clients (the API server, Prometheus) speak HTTP/1.1 well, and
	// HTTP/2 brings the rapid-reset and stream-flood attacks with it.
	var tlsOpts []func(*tls.Config)
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: true, TLSOpts: tlsOpts}
	if o.metricsAddr != "0" {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	// The Leases' namespace (the leader's and the replicas' drain
	// Leases): the flag's, else the pod's, else the mesh's.
	podNS := ""
	if ns, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		podNS = string(bytes.TrimSpace(ns))
	}
	leaderNS := o.leaderElectionNS
	if leaderNS == "" {
		leaderNS = o.meshNamespace
		if podNS != "" {
			leaderNS = podNS
		}
	}
	// The mesh CA (or, with --ca=cert-manager, the trust bundle and the
	// issuer) comes first: the webhook's own certificate needs it.
	bundleChanged, caBundleChanged, trustChanged := make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{}, 1)
	trust, err := casource.New(casource.Config{Source: o.caSource, Namespace: o.meshNamespace, TrustDomain: o.inject.TrustDomain,
		Issuer: o.issuer, TrustBundle: o.trustBundle, Log: log, OnChange: func() {
			for _, ch := range []chan struct{}{bundleChanged, caBundleChanged, trustChanged} {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}})
	if err != nil {
		return err
	}
	controllerID := identity.ID{TrustDomain: o.inject.TrustDomain, Namespace: o.meshNamespace, ServiceAccount: "weft-controller"}
	var webhookServer webhook.Server
	if o.webhookPort != 0 {
		wo := webhook.Options{Port: o.webhookPort, CertDir: o.webhookCertDir, TLSOpts: tlsOpts}
		if o.webhookCertDir == "" {
			svc := o.webhookService + "." + o.meshNamespace + ".svc"
			tlsCfg := trust.ServerTLS([]string{svc, svc + ".cluster.local"}, controllerID, log.WithName("webhook-tls"))
			wo.TLSOpts = append(wo.TLSOpts, func(c *tls.Config) { c.GetCertificate = tlsCfg.GetCertificate })
		}
		webhookServer = webhook.NewServer(wo)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		WebhookServer:          webhookServer,
		Metrics:                metricsOpts,
		HealthProbeBindAddress: o.probeAddr,
		// With --leader-elect, leader.Elector elects: controller-runtime's
		// election would end the process, and with it the xDS server and
		// the webhook, whenever the lease is lost.
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	// What only the leader runs: on the manager itself with one replica,
	// in each term of leadership with --leader-elect.
	var elector *leader.Elector
	leading := func(s leader.Setup) error { return s(mgr) }
	if !o.leaderElect {
		// The one replica runs the status writers all along.
		metrics.Leader.Set(1)
	}
	if o.leaderElect {
		host, _ := os.Hostname()
		elector = &leader.Elector{Main: mgr, Config: cfg, Namespace: leaderNS, Name: "weft-controller.mesh.weft.dev",
			Identity: host + "_" + string(uuid.NewUUID()), Log: log.WithName("leader"),
			// The Lease takes the core/v1 recorder, as controller-runtime's own election does.
			Events: mgr.GetEventRecorderFor("weft-controller")} //nolint:staticcheck // resourcelock records core/v1 Events
		leading = func(s leader.Setup) error {
			elector.Setups = append(elector.Setups, s)
			return nil
		}
		if err := mgr.Add(elector); err != nil {
			return fmt.Errorf("adding the leader election: %w", err)
		}
	}
	// The built-in root CA, read from (or made into) its Secret with a
	// client that has no cache: the controller reads that one Secret, it
	// does not watch them all.
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	if err := trust.Add(mgr, direct); err != nil {
		return err
	}
	if webhookServer != nil && o.webhookCertDir == "" && o.webhookConfig != "" {
		injector := &cabundle.Injector{Client: direct, Name: o.webhookConfig, Bundle: trust.Bundle,
			Changed: caBundleChanged, Log: log.WithName("cabundle")}
		if err := leading(func(m ctrl.Manager) error { return m.Add(injector) }); err != nil {
			return fmt.Errorf("adding the caBundle writer: %w", err)
		}
	}
	// Events (events.k8s.io) for the transitions people look for: a
	// configuration a proxy rejected, on its pod and on the resources it
	// was made from; a new signing CA, on its Secret; a rotation, on the
	// MeshTrust; a pod left out of the mesh, on its controller.
	recorder := mgr.GetEventRecorder("weft-controller")
	if trust.Root != nil {
		trust.Root.Events = recorder
	}
	// The trust state, for kubectl, GitOps tools and weft ca status.
	reporter := &controllers.TrustReporter{Client: direct, Scheme: scheme, Source: o.caSource, Bundle: trust.Bundle,
		Window: o.trustWarning, Changed: trustChanged, Events: recorder, Log: log.WithName("trust-status")}
	if trust.Root != nil {
		reporter.Signing = func() *x509.Certificate {
			if r := trust.Root.Root(); r != nil {
				return r.CA.Cert
			}
			return nil
		}
	} else {
		reporter.Issuer = issuerName(o.issuer)
	}
	if err := leading(func(m ctrl.Manager) error { return m.Add(reporter) }); err != nil {
		return fmt.Errorf("adding the trust state writer: %w", err)
	}
	copts := controllers.Options{MeshNamespace: o.meshNamespace, TrustDomain: o.inject.TrustDomain, DefaultInbound: o.defaultInbound,
		Bundle: trust.Bundle, BundleChanged: bundleChanged, Events: recorder}
	if elector != nil {
		copts.Leading = func(s leader.Setup) { elector.Setups = append(elector.Setups, s) }
	}
	// Pod certificates, where the API server serves them and weft holds
	// the CA that signs them.
	_, pcrErr := mgr.GetRESTMapper().RESTMapping(schema.GroupKind{Group: "certificates.k8s.io", Kind: "PodCertificateRequest"}, "v1")
	switch {
	case pcrErr != nil:
		log.Info("The API server does not serve PodCertificateRequests (certificates.k8s.io/v1); weft signs none", "reason", pcrErr.Error())
	case trust.Root == nil:
		log.Info("weft signs no pod certificates: with --ca=cert-manager it holds no CA, and a PodCertificateRequest carries no CSR an issuer would sign")
	default:
		copts.PodCertificates = &controllers.PodCertificateSigner{SignerName: o.inject.PodCertificateSigner, TrustDomain: o.inject.TrustDomain, Root: trust.Root.Root}
	}
	delivery, err := chooseDelivery(o.certDelivery, copts.PodCertificates != nil)
	if err != nil {
		return err
	}
	o.inject.CertDelivery = delivery
	log.Info("Workload certificates", "delivery", delivery)
	if o.drainAddr != "" && o.xdsAddr == "" {
		return errors.New("--drain-bind-address: the drain endpoint is part of the xDS server; set --xds-bind-address too")
	}
	if o.xdsAddr != "" {
		// Each proxy is served by the delivery it was injected with (its
		// node metadata); the controller's serves those that do not say.
		xo := server.Options{Address: o.xdsAddr, Log: log.WithName("xds"), Observe: o.observe, Events: recorder, Delivery: delivery}
		if o.drainAddr != "" {
			// Terminating pods' pre-stop hooks wait here (drain.go).
			xo.DrainAddress, xo.Pods = o.drainAddr, mgr.GetClient()
		}
		if o.drainAddr != "" && o.drainPeers {
			// ...and for every live replica's proxies: each replica's
			// word in a Lease of its own (drain_peers.go,
			// internal/replicas), whether it leads or not.
			board, err := replicaBoard(ctx, mgr, cfg, leaderNS, podNS)
			if err != nil {
				return err
			}
			xo.Peers = board
		}
		if o.leafTTL < identity.MinLeafTTL || o.leafTTL > identity.MaxLeafTTL {
			return fmt.Errorf("--leaf-ttl: %v is outside [%v, %v]", o.leafTTL, identity.MinLeafTTL, identity.MaxLeafTTL)
		}
		switch o.xdsAuth {
		case "token":
			xo.Auth = &auth.Authenticator{Reviewer: auth.ClientReviewer{Client: direct}, Pods: mgr.GetClient(),
				// A proxy with a certificate from the mesh CA (a pod
				// certificate) may prove itself with it instead.
				Roots: func() *x509.CertPool {
					pool := x509.NewCertPool()
					pool.AppendCertsFromPEM(trust.Bundle())
					return pool
				}, TrustDomain: o.inject.TrustDomain}
			xo.TLS = trust.ServerTLS([]string{o.inject.XDSHost}, controllerID, log.WithName("xds-tls"))
			xo.StatusAddress = o.xdsStatusAddr
			// Sidecars that proved their pod get its certificate over SDS.
			xo.TrustDomain, xo.LeafTTL = o.inject.TrustDomain, o.leafTTL
			if trust.Root != nil {
				xo.Signer = trust.Root.Root
			} else {
				leaves := trust.Leaves(o.leafTTL, o.issuerQPS, o.issuerBurst, log.WithName("leaves"))
				if err := mgr.Add(leaves); err != nil {
					return fmt.Errorf("adding the workload certificates' requests: %w", err)
				}
				xo.Leaves = leaves
			}
			// Sidecars get their certificates over SDS on their
			// authenticated stream, whatever the delivery: Envoy reloads
			// certificate files only through file-based SDS, which weft
			// does not set up yet (translate.EnvoyCertsFiles would read
			// the pod certificate once). Pod certificates serve proxyless
			// gRPC, which has no SDS.
			xo.EnvoyCerts = translate.EnvoyCertsSDS
		case "none":
			log.Info("The xDS server does not authenticate proxies (--xds-auth=none); it listens on loopback only", "address", o.xdsAddr)
		default:
			return fmt.Errorf("--xds-auth: %q is neither token nor none", o.xdsAuth)
		}
		if delivery == wire.DeliveryPodCertificate {
			// weft status shows the pod certificates weft issued.
			xo.PodCertificates, xo.PodCertificateSigner = mgr.GetClient(), o.inject.PodCertificateSigner
		}
		xs, err := server.New(xo)
		if err != nil {
			return err
		}
		if err := mgr.Add(xs); err != nil {
			return fmt.Errorf("adding the xDS server: %w", err)
		}
		copts.OnModel, copts.Proxies = xs.OnModel, xs
	}
	if err := controllers.Setup(ctx, mgr, copts); err != nil {
		return err
	}
	if webhookServer != nil {
		// GetWebhookServer, not webhookServer: the manager starts the
		// webhook server only once it has been asked for it.
		mgr.GetWebhookServer().Register(inject.WebhookPath, &webhook.Admission{Handler: &inject.Webhook{
			Namespaces: mgr.GetClient(), Decoder: admission.NewDecoder(scheme), Config: o.inject, Events: recorder,
		}})
		// Ready once the injector answers TLS (with weft's own certificate,
		// once the mesh CA is loaded).
		if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
			return fmt.Errorf("adding the webhook readiness check: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}
	log.Info("Starting the controller", "version", version.String(), "meshNamespace", o.meshNamespace,
		"leaderElect", o.leaderElect, "host", strings.TrimSpace(cfg.Host))
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

// replicaBoard sets up this replica's drain Lease and its view of the
// others', named after its pod (wire.EnvPodName) and owned by it
// (wire.EnvPodUID) when the pod is in the Leases' namespace.
func replicaBoard(ctx context.Context, mgr ctrl.Manager, cfg *rest.Config, namespace, podNS string) (*replicas.Board, error) {
	if err := server.IndexTerminatingPods(ctx, mgr.GetFieldIndexer()); err != nil {
		return nil, fmt.Errorf("indexing the terminating pods: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("a client for the drain Leases: %w", err)
	}
	host, _ := os.Hostname()
	pod := os.Getenv(wire.EnvPodName)
	board := &replicas.Board{Client: cs, Namespace: namespace, Name: replicas.NameOf(pod, host, utilrand.String(5)),
		Log: mgr.GetLogger().WithName("replicas")}
	if podNS == namespace {
		board.Owner = replicas.OwnerOf(pod, os.Getenv(wire.EnvPodUID))
	}
	if err := mgr.Add(board); err != nil {
		return nil, fmt.Errorf("adding the drain Leases: %w", err)
	}
	return board, nil
}

func runInject(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("weft inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := inject.DefaultConfig()
	file := fs.String("f", "-", "file with pods or workloads (YAML), - for stdin")
	fs.StringVar(&cfg.ProxyImage, "proxy-image", cfg.ProxyImage, "Envoy image")
	fs.StringVar(&cfg.InitImage, "init-image", cfg.InitImage, "weft image for init-redirect")
	fs.Func("cert-delivery", "sds or podCertificate (default sds)", func(v string) error {
		cfg.CertDelivery = wire.CertDelivery(v)
		return nil
	})
	fs.StringVar(&cfg.TracingEndpoint, "tracing-endpoint", "", "the mesh's trace collector (OTLP/gRPC, host:port), as the controller's flag")
	fs.Float64Var(&cfg.TracingSampling, "tracing-sampling", cfg.TracingSampling, "percentage of requests traced, as the controller's flag")
	fs.StringVar(&cfg.MetricsEndpoint, "metrics-endpoint", "", "the proxyless workloads' metrics collector (OTLP/gRPC, host:port), as the controller's flag")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	return inject.Preview(in, stdout, cfg)
}
