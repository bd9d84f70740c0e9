package chart_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/weftmesh/weft/internal/testenv"
)

// env is the package's control plane: weft's CRDs from config/crd/bases
// (what a user who upgrades already has), cert-manager's and the
// Prometheus operator's, and the
// namespace weft-system. The install test starts one of its own, without
// weft's CRDs, because Helm must create them.
var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	// Clients made here log through controller-runtime; give it a logger
	// so that it does not complain that none was set.
	ctrllog.SetLogger(logr.Discard())
	root, err := testenv.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err = testenv.StartWith(testenv.Options{CRDDirs: []string{
		filepath.Join(root, "config", "crd", "bases"), certManagerCRDs(root), prometheusOperatorCRDs(root),
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
		}
	}()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: releaseNamespace}}
	if err := env.Client.Create(context.Background(), ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
