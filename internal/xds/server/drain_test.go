package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/drain"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// askDrain calls a drain endpoint and decodes its answer.
func askDrain(ctx context.Context, hc *http.Client, url string, header map[string]string) (DrainResult, int, error) {
	var res DrainResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return res, 0, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return res, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, resp.StatusCode, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &res); err != nil {
			return res, resp.StatusCode, fmt.Errorf("%s: %w", body, err)
		}
		return res, resp.StatusCode, nil
	}
	return res, resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
}

// TestDrainWaitsForEveryProxy, with pods in a real API server and grpc-go
// xDS clients: the drain answer for a terminating pod comes once every
// connected proxy that could send it requests has acknowledged endpoints
// in which it is DRAINING; a proxy that holds it HEALTHY (the model has
// not changed yet) or has not acknowledged its current endpoints is
// waited for, and named when the wait times out (in the answer and in a
// DrainTimedOut Event on the pod); a pod that is not
// terminating is answered as such; a wait in progress ends when the
// acknowledgements come.
func TestDrainWaitsForEveryProxy(t *testing.T) {
	env := testenv.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo"}}))
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		// A pod bound to a node is deleted gracefully: it stays,
		// terminating, until its kubelet (here, the test) removes it.
		must(env.Client.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "app"}}}}))
	}
	v1 := xdstest.StartBackend(t, "127.0.0.2:0", "v1")
	v2 := xdstest.StartBackend(t, "127.0.0.3:0", "v2")
	model := func(b1, b2 xdstest.Backend) *mesh.Model { return mesh.Build(xdstest.ReviewsInput(b1, b2)) }

	cs, err := kubernetes.NewForConfig(env.Config)
	must(err)
	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	broadcaster.StartRecordingToSink(ctx.Done())
	t.Cleanup(broadcaster.Shutdown)
	s, err := New(Options{Address: "127.0.0.1:0", DrainAddress: "127.0.0.1:0", Pods: env.Client, Log: logr.Discard(),
		Events: broadcaster.NewRecorder(testenv.Scheme(), "weft-controller")})
	must(err)
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Start(sctx) }()
	t.Cleanup(func() { stop(); <-done })
	s.OnModel(ctx, model(xdstest.Ready("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
	addr, err := s.Addr(ctx)
	must(err)
	drainAddr, err := s.DrainAddr(ctx)
	must(err)
	clients := []*xdstest.Client{xdstest.NewClient(t, addr, "client-1", target), xdstest.NewClient(t, addr, "client-2", target)}
	for _, c := range clients {
		if _, err := c.Call(ctx, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	drain := func(pod, timeout string) DrainResult {
		t.Helper()
		url := "http://" + drainAddr + wire.DrainPath
		if timeout != "" {
			url += "?" + wire.DrainTimeoutParam + "=" + timeout
		}
		res, code, err := askDrain(ctx, http.DefaultClient, url, map[string]string{wire.DrainNodeHeader: wire.NodeID(pod, "bookinfo")})
		if err != nil {
			t.Fatalf("drain %s: %v", pod, err)
		}
		if want := map[string]int{metrics.DrainTimedOut: http.StatusGatewayTimeout}[res.Outcome]; want != 0 && code != want || want == 0 && code != http.StatusOK {
			t.Errorf("drain %s: %s answered with HTTP %d", pod, res.Outcome, code)
		}
		return res
	}

	if res := drain("reviews-v1", ""); res.Outcome != metrics.DrainNotTerminating {
		t.Errorf("a pod that is not terminating: %+v", res)
	}
	for _, name := range []string{"reviews-v1", "reviews-v2"} {
		must(env.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: name}},
			client.GracePeriodSeconds(120)))
	}

	t.Run("a proxy that has not acknowledged is waited for", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		watcher := xdstest.NewRecorder(t, addr, "watcher.bookinfo", nil, resource.EndpointType)
		must(watcher.Wait(ctx, func(_, acked map[string]*discovery.DiscoveryResponse) bool {
			return acked[resource.EndpointType] != nil
		}))
		// The model still says reviews-v1 is ready: every proxy holds it
		// HEALTHY.
		if res := drain("reviews-v1", "1s"); res.Outcome != metrics.DrainTimedOut || res.Reaching != 3 || res.Proxies != 3 {
			t.Errorf("while every proxy holds the pod HEALTHY: %+v", res)
		}
		watcher.Acking.Store(false)
		s.OnModel(ctx, model(xdstest.Draining("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Ready("reviews-v2", "v2", "127.0.0.3", v2)))
		must(watcher.Wait(ctx, func(received, acked map[string]*discovery.DiscoveryResponse) bool {
			return received[resource.EndpointType].GetVersionInfo() != acked[resource.EndpointType].GetVersionInfo()
		}))
		// The grpc-go clients acknowledge the pod DRAINING; the proxy that
		// does not is named.
		must(testenv.Eventually(ctx, time.Minute, func(context.Context) error {
			if res := drain("reviews-v1", "500ms"); res.Outcome != metrics.DrainTimedOut || !slices.Equal(res.ReachingProxies, []string{"watcher.bookinfo"}) {
				return fmt.Errorf("%+v", res)
			}
			return nil
		}))
	})
	// The timed-out waits are on the pod, for kubectl describe.
	must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var list eventsv1.EventList
		if err := env.Client.List(ctx, &list, client.InNamespace("bookinfo")); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.Reason == wire.EventDrainTimedOut && ev.Regarding.Name == "reviews-v1" && ev.Regarding.UID != "" &&
				strings.Contains(ev.Note, "watcher.bookinfo") {
				return nil
			}
		}
		return fmt.Errorf("no DrainTimedOut Event on reviews-v1 names the watcher among %d Events", len(list.Items))
	}))
	// The watcher has gone: nothing reaches reviews-v1 any more.
	if res := drain("reviews-v1", "1m"); res.Outcome != metrics.DrainDrained || res.Proxies != 2 || res.Reaching != 0 {
		t.Errorf("once every proxy acknowledged the pod DRAINING: %+v", res)
	}
	// A wait in progress ends with the acknowledgements, not its timeout.
	var wg sync.WaitGroup
	var res DrainResult
	wg.Go(func() { res = drain("reviews-v2", "2m") })
	// Until the model changes, the wait goes on (its answer would say
	// reaching 2; it has none yet).
	s.OnModel(ctx, model(xdstest.Draining("reviews-v1", "v1", "127.0.0.2", v1), xdstest.Draining("reviews-v2", "v2", "127.0.0.3", v2)))
	wg.Wait()
	if res.Outcome != metrics.DrainDrained || res.Seconds > 60 {
		t.Errorf("a wait in progress: %+v", res)
	}
	t.Logf("reviews-v2 drained in %.3fs", res.Seconds)
}

// TestDrainAuthenticates: over TLS against the real API server, a pod's
// token asks for its own pod only; a mesh client certificate for a pod of
// its ServiceAccount; nothing else is answered.
func TestDrainAuthenticates(t *testing.T) {
	f := newAuthFixture(t, map[string]string{"a": "client", "b": "client", "c": "other"}, func(o *Options, f *authFixture) {
		o.Auth.Roots = func() *x509.CertPool {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(f.meshRoot().Bundle)
			return pool
		}
		o.Auth.TrustDomain = "cluster.local"
		o.DrainAddress, o.Pods = "127.0.0.1:0", f.c
	})
	drainAddr, err := f.srv.DrainAddr(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := f.root.Issue(identity.LeafRequest{ID: identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "client"},
		PublicKey: key.Public()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	httpClient := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: f.roots, ServerName: authHost, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	plain, withCert := httpClient(nil), httpClient(&tls.Certificate{Certificate: chain, PrivateKey: key})
	tokA := f.token(t, "a", wire.TokenAudience)
	url := "https://" + drainAddr + wire.DrainPath
	for name, tc := range map[string]struct {
		hc     *http.Client
		header map[string]string
		code   int
	}{
		"a pod's token":                             {plain, map[string]string{"Authorization": "Bearer " + tokA}, http.StatusOK},
		"a pod's token naming its pod":              {plain, map[string]string{"Authorization": "Bearer " + tokA, wire.DrainNodeHeader: "a.shop"}, http.StatusOK},
		"a pod's token naming another pod":          {plain, map[string]string{"Authorization": "Bearer " + tokA, wire.DrainNodeHeader: "b.shop"}, http.StatusForbidden},
		"a token for another audience":              {plain, map[string]string{"Authorization": "Bearer " + f.token(t, "a", "api")}, http.StatusUnauthorized},
		"nothing":                                   {plain, map[string]string{wire.DrainNodeHeader: "a.shop"}, http.StatusUnauthorized},
		"a certificate naming a pod of its account": {withCert, map[string]string{wire.DrainNodeHeader: "b.shop"}, http.StatusOK},
		"a certificate naming another account's":    {withCert, map[string]string{wire.DrainNodeHeader: "c.shop"}, http.StatusForbidden},
		"a certificate naming no pod":               {withCert, nil, http.StatusBadRequest},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, code, err := askDrain(f.ctx, tc.hc, url, tc.header)
			if code != tc.code {
				t.Fatalf("HTTP %d (%v), want %d", code, err, tc.code)
			}
			if code == http.StatusOK && res.Outcome != metrics.DrainNotTerminating {
				t.Errorf("a pod that is not terminating: %+v", res)
			}
		})
	}
	// What a proxyless workload runs, with the files the injector mounts.
	t.Run("the client package with the pod's files", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		tokenFile, rootsFile := filepath.Join(dir, "token"), filepath.Join(dir, "roots.pem")
		if err := os.WriteFile(tokenFile, []byte(tokA), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(rootsFile, f.meshRoot().Bundle, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := drain.Wait(f.ctx, drain.Request{URL: url, TokenFile: tokenFile, RootsFile: rootsFile, ServerName: authHost})
		if err != nil || a.Outcome != metrics.DrainNotTerminating {
			t.Errorf("drain.Wait: %+v, %v", a, err)
		}
	})
}
