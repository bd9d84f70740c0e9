package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/testenv"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// deliveryIPs are the pods' addresses: reviews-v1, ratings-1.
var deliveryIPs = []string{"192.0.2.71", "192.0.2.72"}

// TestDeliverySwitch: the controller binary's --cert-delivery changes
// under running proxyless gRPC workloads, each injected by the
// controller's webhook through the real API server under a mesh-wide
// STRICT PeerAuthentication. Under podCertificate, reviews-v1 and
// client-a (pod certificates from weft's signer) call over mTLS without
// pause. The controller is restarted with sds: they keep mTLS; ratings-1
// and client-b, injected now, get SDS (no podCertificate volume, no
// certificate provider, weft.certDelivery=sds in their node) and are
// sent no TLS (plain text, which the PeerAuthentication's Ready=False
// PlainText names). Restarted with podCertificate again: every running
// workload goes on as it was, and client-c, injected now, gets pod
// certificates and mTLS. Across both switches: no failed call, no call of
// the wrong security, no proxy NACKs (its status, and no rejection
// Event).
func TestDeliverySwitch(t *testing.T) {
	t.Parallel() // each in its own network namespace, with its own API server
	// grpc-go reads its call-credentials switch once, when the test's
	// process starts.
	if !testenv.InOwnNetworkNamespaceWith(t, []string{callCredsEnv + "=true"}, deliveryIPs...) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	r := newMeshRig(ctx, t)
	r.start("--cert-delivery=podCertificate")
	const ns = "shop"
	r.meshNamespace(ns, "reviews", "ratings")
	reviews, ratings := "reviews.shop.svc.cluster.local:9080", "ratings.shop.svc.cluster.local:9080"

	// The NACK watch: the proxies' status is read every half second for
	// as long as the test runs (a controller that is down answers
	// nothing, which is no NACK).
	nackSeen := make(chan string, 1)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for watchCtx.Err() == nil {
			if got, err := nacks(watchCtx, r.statusAddr); err == nil && len(got) > 0 {
				select {
				case nackSeen <- strings.Join(got, "; "):
				default:
				}
			}
			select {
			case <-watchCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	delivered := func(p *pod, want wire.CertDelivery) {
		t.Helper()
		_, provider := p.providers[wire.CertProviderInstance]
		if p.delivery != want || p.meta[wire.MetaCertDelivery] != string(want) || provider != (want == wire.DeliveryPodCertificate) {
			t.Fatalf("pod %s: injected for %s (node metadata %v, certificate providers %v), want %s", p.pod.Name, p.delivery, p.meta, p.providers, want)
		}
	}
	// first waits for a workload's first call, of the security wanted.
	first := func(name string, cl *xdstest.Client, want string) {
		t.Helper()
		r.must(testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			a, err := cl.Ask(callCtx, grpc.WaitForReady(true))
			if err != nil {
				return err
			}
			if a.Caller != want {
				return fmt.Errorf("%s's call: the caller %q, want %q", name, a.Caller, want)
			}
			return nil
		}))
	}
	// settled waits until every named proxy acknowledged all it was sent.
	// (A failure here does not end the test: the calls are checked too.)
	settled := func(nodes ...string) {
		t.Helper()
		if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			for _, n := range nodes {
				if err := allAcked(ctx, r.statusAddr, wire.NodeID(n, ns)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	const pace, limit = 20 * time.Millisecond, 8 * time.Minute

	// Under podCertificate.
	v1 := r.inject(ns, "reviews-v1", "reviews")
	a := r.inject(ns, "client-a", "client-a")
	delivered(v1, wire.DeliveryPodCertificate)
	delivered(a, wire.DeliveryPodCertificate)
	r.serve(v1, deliveryIPs[0], "reviews")
	clA := r.dial(a, reviews)
	first("client-a", clA, a.id())
	callsA := startCaller(ctx, "client-a → reviews (mTLS)", clA, a.id(), pace, limit)

	// Switched to sds.
	r.stop()
	r.start("--cert-delivery=sds")
	switched := time.Now()
	settled("reviews-v1", "client-a")
	t.Logf("podCertificate → sds: the running workloads acknowledged their configuration %v after the restart", time.Since(switched).Round(time.Millisecond))
	r1 := r.inject(ns, "ratings-1", "ratings")
	b := r.inject(ns, "client-b", "client-b")
	delivered(r1, wire.DeliverySDS)
	delivered(b, wire.DeliverySDS)
	r.serve(r1, deliveryIPs[1], "ratings")
	clB := r.dial(b, ratings)
	first("client-b", clB, "")
	callsB := startCaller(ctx, "client-b → ratings (plain text: SDS)", clB, "", pace, limit)
	// Status tells the truth: one workload, ratings-1, takes plain text
	// under STRICT.
	pa := &meshv1.PeerAuthentication{}
	if err := testenv.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		if err := r.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, pa); err != nil {
			return err
		}
		c := meta.FindStatusCondition(pa.Status.Conditions, meshv1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != meshv1.ReasonPlainText || !strings.HasPrefix(c.Message, "1 workload ") {
			return fmt.Errorf("the PeerAuthentication's Ready: %+v", c)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Switched back to podCertificate.
	r.stop()
	r.start("--cert-delivery=podCertificate")
	switched = time.Now()
	settled("reviews-v1", "client-a", "ratings-1", "client-b")
	t.Logf("sds → podCertificate: the running workloads acknowledged their configuration %v after the restart", time.Since(switched).Round(time.Millisecond))
	c := r.inject(ns, "client-c", "client-c")
	delivered(c, wire.DeliveryPodCertificate)
	clC := r.dial(c, reviews)
	first("client-c", clC, c.id())
	callsC := startCaller(ctx, "client-c → reviews (mTLS)", clC, c.id(), pace, limit)
	settled("reviews-v1", "client-a", "ratings-1", "client-b", "client-c")
	time.Sleep(5 * time.Second) // calls on what every proxy acknowledged

	for _, cl := range []*caller{callsA, callsB, callsC} {
		cl.check(t)
	}
	stopWatch()
	<-watched
	select {
	case n := <-nackSeen:
		t.Errorf("a proxy NACKed: %s", n)
	default:
	}
	if ev := r.rejections(ns); len(ev) > 0 {
		t.Errorf("rejected configuration: %v", ev)
	}
}

// allAcked says whether the proxy node has acknowledged every type it was
// sent (its status, CSDS), and names what it has not.
func allAcked(ctx context.Context, statusAddr, node string) error {
	got, err := nacks(ctx, statusAddr)
	if err != nil {
		return err
	}
	if len(got) > 0 {
		return fmt.Errorf("NACKs: %v", got)
	}
	return syncedNode(ctx, statusAddr, node)
}
