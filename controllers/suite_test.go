package controllers_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/controllers"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/testenv"
)

// meshNamespace stands in for weft-system in these tests.
const meshNamespace = "weft-system"

// testBundle is the root bundle the controllers publish in the tests, and
// testRoot the CA that signs pod certificates for testSigner.
var (
	testBundle []byte
	testRoot   *identity.Root
	// published is the bundle the publisher reads (a test rotates it,
	// and says so on bundleChanged).
	published     atomic.Pointer[[]byte]
	bundleChanged = make(chan struct{}, 1)
)

const testSigner = "weft.dev/workload"

var (
	env    *testenv.Env
	models = &modelRecorder{}
)

// modelRecorder keeps the mesh models the watcher publishes.
type modelRecorder struct {
	mu     sync.Mutex
	latest *mesh.Model
	builds int
}

func (r *modelRecorder) record(_ context.Context, m *mesh.Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latest, r.builds = m, r.builds+1
}

func (r *modelRecorder) get() (*mesh.Model, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest, r.builds
}

// TestMain starts a real API server and the reconcilers once for the
// package; each test works in namespaces of its own.
func TestMain(m *testing.M) {
	flag.Parse()
	// Fuzzing (-fuzz, and the workers it starts) runs the pure checks in
	// many processes; none needs an API server.
	if fuzz := flag.Lookup("test.fuzz"); fuzz != nil && fuzz.Value.String() != "" {
		os.Exit(m.Run())
	}
	if w := flag.Lookup("test.fuzzworker"); w != nil && w.Value.String() == "true" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if env, err = testenv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the test API server:", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.InfoLevel)))
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := identity.NewRoot("cluster.local", time.Now(), time.Hour)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testBundle = identity.EncodeCerts(root.Chain)
	testRoot = &identity.Root{CA: root, Bundle: testBundle}
	published.Store(&testBundle)
	if err := controllers.Setup(ctx, mgr, controllers.Options{MeshNamespace: meshNamespace, OnModel: models.record,
		Bundle:          func() []byte { return *published.Load() },
		BundleChanged:   bundleChanged,
		PodCertificates: &controllers.PodCertificateSigner{SignerName: testSigner, TrustDomain: "cluster.local", Root: func() *identity.Root { return testRoot }},
		Events:          mgr.GetEventRecorder("weft-controller"),
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		return 1
	}
	return code
}
