package certmanager

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/weftmesh/weft/internal/identity"
)

// fakeIssuer signs with a test CA through Check, as Requester does, and
// can be stopped, slowed and counted.
type fakeIssuer struct {
	t    *testing.T
	ca   *testCA
	mu   sync.Mutex
	down error
	hold chan struct{} // when set, each Sign waits for it to close

	calls, inFlight, maxInFlight atomic.Int32
}

func (f *fakeIssuer) Sign(ctx context.Context, req Request) ([][]byte, error) {
	f.calls.Add(1)
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	f.mu.Lock()
	down, hold := f.down, f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if down != nil {
		return nil, down
	}
	now := time.Now()
	der := f.ca.sign(f.t, leafTemplate(req, now), req.Key.Public())
	return Check(identity.EncodeCerts([][]byte{der}), req, now, now, f.ca.pem())
}

func (f *fakeIssuer) set(down error, hold chan struct{}) {
	f.mu.Lock()
	f.down, f.hold = down, hold
	f.mu.Unlock()
}

// started returns Leaves on f, started, and a channel told of each
// request's end.
func started(t *testing.T, f *fakeIssuer, trust func() []byte, maxInFlight int) (*Leaves, <-chan struct{}) {
	t.Helper()
	if trust == nil {
		trust = f.ca.pem
	}
	l := &Leaves{Sign: f.Sign, Trust: trust, TTL: time.Hour, MaxInFlight: maxInFlight, Log: testr.New(t)}
	ended := make(chan struct{}, 1000)
	l.OnLeaves(func() { ended <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	// Start has run once a request can go out.
	for deadline := time.Now().Add(10 * time.Second); ; {
		l.mu.Lock()
		up := l.ctx != nil
		l.mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Leaves did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return l, ended
}

func await(t *testing.T, ended <-chan struct{}, n int) {
	t.Helper()
	for range n {
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatal("no request ended within 30 s")
		}
	}
}

func TestLeavesAsksNothingBeforeStart(t *testing.T) {
	f := &fakeIssuer{t: t, ca: newTestCA(t, "root", nil)}
	l := &Leaves{Sign: f.Sign, Trust: f.ca.pem, Log: testr.New(t)}
	_, err := l.Leaf(workload, time.Now())
	if !errors.Is(err, identity.ErrWaiting) || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("Leaf before Start = %v, want ErrWaiting because the controller is starting", err)
	}
	if n := f.calls.Load(); n != 0 {
		t.Fatalf("%d requests went out before Start", n)
	}
}

func TestLeavesShareOneRequestPerIdentity(t *testing.T) {
	f := &fakeIssuer{t: t, ca: newTestCA(t, "root", nil)}
	hold := make(chan struct{})
	f.set(nil, hold)
	l, ended := started(t, f, nil, 2)
	ids := []identity.ID{workload,
		{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "pay"},
		{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "ship"},
		{TrustDomain: "cluster.local", Namespace: "web", ServiceAccount: "front"},
	}
	// 50 proxies of each identity ask at once, while the issuer holds.
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			if _, err := l.Leaf(ids[i%len(ids)], time.Now()); !errors.Is(err, identity.ErrWaiting) {
				t.Errorf("Leaf while the issuer holds = %v, want ErrWaiting", err)
			}
		})
	}
	wg.Wait()
	close(hold)
	await(t, ended, len(ids))
	if n := f.calls.Load(); n != int32(len(ids)) {
		t.Fatalf("%d requests for 200 proxies of %d identities, want one each", n, len(ids))
	}
	if m := f.maxInFlight.Load(); m > 2 {
		t.Fatalf("%d requests were in flight at once; MaxInFlight is 2", m)
	}
	first, err := l.Leaf(workload, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Leaf(workload, time.Now())
	if err != nil || again != first {
		t.Fatalf("a second proxy of %s got another leaf (%v)", workload, err)
	}
	if !l.Current(first, time.Now()) {
		t.Fatal("a fresh leaf is not current")
	}
	if n := f.calls.Load(); n != int32(len(ids)) {
		t.Fatalf("serving the leaves again cost %d more requests", n-int32(len(ids)))
	}
}

func TestLeavesServeTheOldLeafThroughAnOutage(t *testing.T) {
	f := &fakeIssuer{t: t, ca: newTestCA(t, "root", nil)}
	l, ended := started(t, f, nil, 0)
	if _, err := l.Leaf(workload, time.Now()); !errors.Is(err, identity.ErrWaiting) {
		t.Fatalf("the first Leaf = %v, want ErrWaiting", err)
	}
	await(t, ended, 1)
	old, err := l.Leaf(workload, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// The issuer goes down; past half-life the old leaf still serves
	// while a renewal is asked for, and fails.
	f.set(errors.New("issuer unreachable"), nil)
	halfLife := old.RenewAt.Add(time.Second)
	if !l.Current(old, halfLife) {
		t.Fatal("the old leaf is not served past half-life while its renewal is on its way")
	}
	await(t, ended, 1)
	if got, err := l.Leaf(workload, halfLife); err != nil || got != old {
		t.Fatalf("Leaf after a failed renewal = %v, want the old leaf until it expires", err)
	}
	// A new identity waits, told why.
	other := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "new"}
	if _, err := l.Leaf(other, time.Now()); !errors.Is(err, identity.ErrWaiting) {
		t.Fatalf("Leaf for a new identity while the issuer is down = %v, want ErrWaiting", err)
	}
	await(t, ended, 1)
	_, err = l.Leaf(other, time.Now())
	if !errors.Is(err, identity.ErrWaiting) || !strings.Contains(err.Error(), "issuer unreachable") {
		t.Fatalf("Leaf after the request failed = %v, want ErrWaiting naming the failure", err)
	}
	// Asking again waits out the back-off.
	calls := f.calls.Load()
	for range 20 {
		_, _ = l.Leaf(other, time.Now())
		l.Current(old, halfLife)
	}
	if n := f.calls.Load(); n != calls {
		t.Fatalf("%d requests went out during the back-off", n-calls)
	}
	// Expired, the old leaf is no longer served.
	expired := old.NotAfter.Add(time.Second)
	if l.Current(old, expired) {
		t.Fatal("an expired leaf is current")
	}
	if _, err := l.Leaf(workload, expired); !errors.Is(err, identity.ErrWaiting) {
		t.Fatalf("Leaf after expiry = %v, want ErrWaiting", err)
	}
	await(t, ended, 1) // the renewal asked once the back-off passed fails too

	// The issuer is back: after the back-off both get leaves.
	f.set(nil, nil)
	l.mu.Lock()
	for _, e := range l.byID {
		e.retryAt = time.Time{} // the back-off has passed
	}
	l.mu.Unlock()
	_, _ = l.Leaf(other, time.Now())
	l.Current(old, halfLife)
	await(t, ended, 2)
	fresh, err := l.Leaf(workload, time.Now())
	if err != nil || fresh == old {
		t.Fatalf("Leaf after the issuer returned = %v (the old leaf: %t)", err, fresh == old)
	}
	if l.Current(old, time.Now()) {
		t.Fatal("the old leaf is still current beside its renewal")
	}
	if _, err := l.Leaf(other, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestLeavesFollowTheBundle(t *testing.T) {
	f := &fakeIssuer{t: t, ca: newTestCA(t, "root", nil)}
	var bundle atomic.Pointer[[]byte]
	b := f.ca.pem()
	bundle.Store(&b)
	l, ended := started(t, f, func() []byte { return *bundle.Load() }, 0)
	_, _ = l.Leaf(workload, time.Now())
	await(t, ended, 1)
	first, err := l.Leaf(workload, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// A second root is added: the same leaf goes out with both roots.
	other := newTestCA(t, "next root", nil)
	both := append(append([]byte{}, f.ca.pem()...), other.pem()...)
	bundle.Store(&both)
	if l.Current(first, time.Now()) {
		t.Fatal("a leaf carrying the old bundle is current")
	}
	next, err := l.Leaf(workload, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if string(next.Chain[0]) != string(first.Chain[0]) || string(next.Bundle) != string(both) {
		t.Fatal("a bundle that still trusts the leaf did not go out with the same leaf")
	}
	// The leaf's root is retired: it is not served, a new one is asked.
	only := other.pem()
	bundle.Store(&only)
	if _, err := l.Leaf(workload, time.Now()); !errors.Is(err, identity.ErrWaiting) {
		t.Fatalf("Leaf after its root left the bundle = %v, want ErrWaiting", err)
	}
	await(t, ended, 1)
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d requests, want a second one once the bundle no longer trusts the leaf", n)
	}
}
