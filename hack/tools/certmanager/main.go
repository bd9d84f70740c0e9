// Command cert-manager-controller runs cert-manager's own controllers, taken
// from the registry in its pkg/controller (the same constructors its
// controller binary starts), for the self-signed and CA issuers and the
// Certificate life cycle. cert-manager publishes no binary on the Go module
// proxy; this harness stands in for its controller Deployment in weft's
// tests. Usage:
//
//	cert-manager-controller --kubeconfig=FILE [--namespace=NS] [--controllers=a,b]
//
// It runs until SIGTERM or SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Controllers register themselves in controllerpkg.Known() and
	// issuers in the issuer factory when imported.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// defaultControllers are the ones cert-manager's controller starts by
// default that matter to a CA or self-signed issuer.
var defaultControllers = []string{
	"issuers",
	"clusterissuers",
	"certificaterequests-approver",
	"certificaterequests-issuer-ca",
	"certificaterequests-issuer-selfsigned",
	"certificates-trigger",
	"certificates-issuing",
	"certificates-key-manager",
	"certificates-request-manager",
	"certificates-readiness",
	"certificates-revision-manager",
}

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	namespace := flag.String("namespace", "cert-manager", "cluster resource namespace: where ClusterIssuers' Secrets are")
	controllers := flag.String("controllers", strings.Join(defaultControllers, ","), "controllers to run, by their registered names")
	workers := flag.Int("workers", 2, "workers per controller")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *kubeconfig, *namespace, strings.Split(*controllers, ","), *workers); err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, namespace string, names []string, workers int) error {
	ctx = logf.NewContext(ctx, klog.Background(), "cert-manager-controller")
	opts := controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: namespace,
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			// cert-manager's defaults (its --copied-annotation-prefixes
			// and backoff flags).
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
		SchedulerOptions: controllerpkg.SchedulerOptions{MaxConcurrentChallenges: 60},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		return err
	}
	shared, err := factory.Build()
	if err != nil {
		return err
	}

	known := controllerpkg.Known()
	var ifaces []controllerpkg.Interface
	var started []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		fn, ok := known[n]
		if !ok {
			var all []string
			for k := range known {
				all = append(all, k)
			}
			sort.Strings(all)
			return fmt.Errorf("no controller %q; known: %s", n, strings.Join(all, ", "))
		}
		iface, err := fn(factory)
		if err != nil {
			return fmt.Errorf("controller %s: %w", n, err)
		}
		ifaces = append(ifaces, iface)
		started = append(started, n)
	}

	// The controllers have asked for their informers; start them (shared
	// by every Context the factory builds).
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())

	errs := make(chan error, len(ifaces))
	var wg sync.WaitGroup
	for i, iface := range ifaces {
		wg.Go(func() {
			if err := iface.Run(workers, ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", started[i], err)
			}
		})
	}
	klog.InfoS("cert-manager controllers started", "controllers", started, "clusterResourceNamespace", namespace)
	wg.Wait()
	close(errs)
	for err := range errs {
		if ctx.Err() == nil {
			return err
		}
	}
	return nil
}
