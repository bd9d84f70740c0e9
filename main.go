// Command weft is weft's one binary: the controller, the traffic-capture
// init command, and the user commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/version"
)

const usage = `weft is a service mesh for Kubernetes.

Usage:
  weft <command> [flags]

Commands:
  controller   run the control plane (reconcilers, and later xDS, CA and webhook)
  version      print the version

Run "weft <command> -h" for a command's flags.
`

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
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
	logLevel         string
	logFormat        string
}

func (o *controllerOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig; default: $KUBECONFIG, then the in-cluster config")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443",
		"address of the metrics endpoint, served over HTTPS to authenticated and authorized callers only; \"0\" turns it off")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of the /healthz and /readyz probes")
	fs.BoolVar(&o.leaderElect, "leader-elect", false,
		"elect one leader among the replicas to run the reconcilers (serving parts run on every replica)")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "",
		"namespace of the leader election Lease; default: the pod's namespace, or --mesh-namespace outside a cluster")
	fs.StringVar(&o.meshNamespace, "mesh-namespace", "weft-system",
		"the control plane's namespace; a PeerAuthentication without selector here covers the whole mesh")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, error, or a number (higher is more verbose)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
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

func (o *controllerOptions) restConfig() (*rest.Config, error) {
	if o.kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		return cfg, nil
	}
	return ctrl.GetConfig()
}

// newScheme registers every kind the controller reads or writes.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(meshv1.AddToScheme(s))
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

	cfg, err := o.restConfig()
	if err != nil {
		return fmt.Errorf("loading the API server config: %w", err)
	}
	scheme := newScheme()

	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: true}
	if o.metricsAddr != "0" {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	leaderNS := o.leaderElectionNS
	if leaderNS == "" {
		if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err != nil {
			leaderNS = o.meshNamespace
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        "weft-controller.mesh.weft.dev",
		LeaderElectionNamespace: leaderNS,
		// The reconcilers are idempotent and write status only; a new leader
		// can start before the old one has stopped.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: o.meshNamespace}); err != nil {
		return err
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
