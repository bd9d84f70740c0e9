package inject_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/inject"
)

// Pod creations at a rollout's rate: creations pods in window, each
// through the real API server, which calls the webhook (failurePolicy
// Fail, timeoutSeconds 5) before it stores the pod.
const (
	creations      = 500
	creationWindow = 10 * time.Second
	// creationWorkers create at once: enough that a slow answer does not
	// hold the rate back.
	creationWorkers = 25
)

// BenchmarkPodCreations creates 500 pods in 10 s through the API server
// and reports the webhook's latency as the API server measured it (the
// buckets of its apiserver_admission_webhook_admission_duration_seconds
// for weft's webhook, before and after), each creation's round trip, and
// the creations that failed or were stored without a sidecar. It fails
// when one did, or when more than 1% of the webhook's calls took over
// 100 ms. Run it once: -benchtime 1x.
func BenchmarkPodCreations(b *testing.B) {
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := 0
	for b.Loop() {
		run++
		before, err := webhookHistogram(ctx, cs)
		if err != nil {
			b.Fatal(err)
		}
		lat, failed := createPods(ctx, fmt.Sprintf("creation-%d-%d", time.Now().Unix(), run))
		after, err := webhookHistogram(ctx, cs)
		if err != nil {
			b.Fatal(err)
		}
		calls := after.count - before.count
		within, within25 := after.le100ms-before.le100ms, after.le25ms-before.le25ms
		slices.Sort(lat)
		b.Logf("%d pods in %v: webhook calls %.0f, of them within 25 ms %.0f and within 100 ms %.0f (API server's histogram); creation round trip p50 %.1f ms, p99 %.1f ms, max %.1f ms; failed or not injected: %d",
			creations, creationWindow, calls, within25, within, millis(at(lat, 0.5)), millis(at(lat, 0.99)), millis(at(lat, 1)), len(failed))
		b.ReportMetric(millis(at(lat, 0.5)), "create-p50-ms")
		b.ReportMetric(millis(at(lat, 0.99)), "create-p99-ms")
		b.ReportMetric(float64(len(failed)), "failed")
		if calls > 0 {
			b.ReportMetric(100*float64(within)/float64(calls), "webhook-within-100ms-%")
		}
		if len(failed) > 0 {
			b.Errorf("%d creations failed or were stored without a sidecar; first: %s", len(failed), failed[0])
		}
		if calls < creations {
			b.Errorf("the API server called the webhook %.0f times for %d pods", calls, creations)
		} else if float64(within) < 0.99*float64(calls) {
			b.Errorf("the webhook's p99 is over 100 ms: %.0f of %.0f calls within", within, calls)
		}
	}
	b.StopTimer()
	if err := env.Client.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(meshed), client.MatchingLabels{"bench": "creations"}); err != nil {
		b.Error(err)
	}
}

// createPods creates the pods at an even pace over creationWindow and
// returns each creation's round trip and what went wrong.
func createPods(ctx context.Context, prefix string) ([]time.Duration, []string) {
	var mu sync.Mutex
	var lat []time.Duration
	var failed []string
	tickets := make(chan int)
	var wg sync.WaitGroup
	for range creationWorkers {
		wg.Go(func() {
			for i := range tickets {
				p := pod(fmt.Sprintf("%s-%d", prefix, i))
				p.Labels["bench"] = "creations"
				start := time.Now()
				err := env.Client.Create(ctx, p)
				d := time.Since(start)
				mu.Lock()
				lat = append(lat, d)
				switch {
				case err != nil:
					failed = append(failed, fmt.Sprintf("%s: %v", p.Name, err))
				case p.Annotations[inject.AnnotationInjected] == "":
					failed = append(failed, p.Name+": stored without a sidecar")
				}
				mu.Unlock()
			}
		})
	}
	pace := time.NewTicker(creationWindow / creations)
	for i := range creations {
		if i > 0 {
			<-pace.C
		}
		tickets <- i
	}
	pace.Stop()
	close(tickets)
	wg.Wait()
	return lat, failed
}

// histogram is what the API server counted of weft's webhook calls.
type histogram struct{ count, le25ms, le100ms float64 }

// webhookHistogram reads the API server's metrics: the calls of weft's
// webhook (inject.mesh.weft.dev) that admitted, in all and within 100 ms.
func webhookHistogram(ctx context.Context, cs kubernetes.Interface) (histogram, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return histogram{}, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	const name = "apiserver_admission_webhook_admission_duration_seconds"
	var h histogram
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || !strings.Contains(line, `name="inject.mesh.weft.dev"`) || !strings.Contains(line, `operation="CREATE"`) {
			continue
		}
		value, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return histogram{}, fmt.Errorf("metric line %q: %w", line, err)
		}
		switch {
		case strings.HasPrefix(line, name+"_count"):
			h.count += value
		case strings.HasPrefix(line, name+"_bucket") && strings.Contains(line, `le="0.1"`):
			h.le100ms += value
		case strings.HasPrefix(line, name+"_bucket") && strings.Contains(line, `le="0.025"`):
			h.le25ms += value
		}
	}
	return h, sc.Err()
}

// millis is d in milliseconds.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// at is the q-th quantile (nearest rank) of sorted ds.
func at(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, max(0, int(q*float64(len(ds))+0.5)-1))]
}
