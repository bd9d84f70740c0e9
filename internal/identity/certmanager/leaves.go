package certmanager

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/metrics"
)

// Leaves is the sidecars' source of leaves (sds.Source and sds.Notifier)
// when an issuer weft asks signs them. The proxies of one identity share
// one leaf: a rollout of many pods of a ServiceAccount costs one request.
// A leaf is asked for again at half-life; until the new one comes the old
// one serves, up to its expiry. A failed request is asked again after a
// back-off (5 s doubling to 2 min, and at most a quarter of what the old
// leaf has left); proxies without a leaf wait, and are
// sent nothing that names one. It asks for nothing until Start.
type Leaves struct {
	// Sign has a certificate signed and checked (Requester.Sign).
	Sign func(context.Context, Request) ([][]byte, error)
	// Trust returns the mesh's trust bundle (PEM), nil until loaded;
	// served with each leaf.
	Trust func() []byte
	// TTL is the lifetime asked for (identity.DefaultLeafTTL when zero).
	TTL time.Duration
	// Limiter bounds the rate of requests (none when nil); MaxInFlight
	// how many wait for an answer at once (default 32).
	Limiter     *rate.Limiter
	MaxInFlight int
	// Timeout bounds each request (default 1 min).
	Timeout time.Duration
	Log     logr.Logger

	once   sync.Once
	mu     sync.Mutex
	ctx    context.Context // set by Start
	slots  chan struct{}
	byID   map[identity.ID]*entry
	notify []func()
}

// entry is one identity's leaf and its request.
type entry struct {
	leaf     *identity.Leaf
	asking   bool
	failures int
	retryAt  time.Time
	lastErr  error
	touched  time.Time
}

const (
	firstRetry = 5 * time.Second
	lastRetry  = 2 * time.Minute
	// idle is how long an identity no proxy asked about is kept.
	idle = 10 * time.Minute
)

func (l *Leaves) init() {
	l.once.Do(func() {
		n := l.MaxInFlight
		if n <= 0 {
			n = 32
		}
		l.slots = make(chan struct{}, n)
		l.byID = map[identity.ID]*entry{}
	})
}

// NeedLeaderElection is false: every replica serves its own proxies.
func (l *Leaves) NeedLeaderElection() bool { return false }

// OnLeaves registers f, called after a request ends, issued or not: the
// proxies waiting on it are served, or told why they wait.
func (l *Leaves) OnLeaves(f func()) {
	l.init()
	l.mu.Lock()
	l.notify = append(l.notify, f)
	l.mu.Unlock()
}

// Start lets requests go out, asks for the leaves proxies wait for, and
// forgets identities no proxy asked about for 10 minutes, until ctx ends.
func (l *Leaves) Start(ctx context.Context) error {
	l.init()
	l.mu.Lock()
	l.ctx = ctx
	now := time.Now()
	for id, e := range l.byID {
		if e.leaf == nil || !now.Before(e.leaf.RenewAt) {
			l.askLocked(id, e, now)
		}
	}
	l.mu.Unlock()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			l.prune(now)
		}
	}
}

func (l *Leaves) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, e := range l.byID {
		if !e.asking && now.Sub(e.touched) > idle {
			delete(l.byID, id)
		}
	}
	l.countWaitingLocked(now)
}

// Leaf returns id's leaf: the one in force, or, when it is due or there
// is none, the old one while it lasts and a new one asked for. With none
// to serve it returns an error wrapping identity.ErrWaiting that says why.
func (l *Leaves) Leaf(id identity.ID, now time.Time) (*identity.Leaf, error) {
	l.init()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byID[id]
	if e == nil {
		e = &entry{}
		l.byID[id] = e
	}
	e.touched = now
	if lf := l.freshLocked(e, now); lf != nil {
		return lf, nil
	}
	l.askLocked(id, e, now)
	if lf := l.trustedLocked(e, now); lf != nil {
		return lf, nil
	}
	return nil, l.waitingLocked(id, e)
}

// freshLocked returns e's leaf when it is before half-life and chains to
// the bundle in force, carrying that bundle.
func (l *Leaves) freshLocked(e *entry, now time.Time) *identity.Leaf {
	if e.leaf == nil || !now.Before(e.leaf.RenewAt) {
		return nil
	}
	return l.trustedLocked(e, now)
}

// trustedLocked returns e's leaf with the bundle in force when it has not
// expired and chains to that bundle: a bundle that changed (a root added,
// or one retired that did not sign it) goes out with the same leaf.
func (l *Leaves) trustedLocked(e *entry, now time.Time) *identity.Leaf {
	lf := e.leaf
	if lf == nil || !now.Before(lf.NotAfter) {
		return nil
	}
	trust := l.Trust()
	if bytes.Equal(lf.Bundle, trust) {
		return lf
	}
	if trust == nil || !chainsTo(lf, trust, now) {
		return nil
	}
	next := *lf
	next.Bundle = trust
	e.leaf = &next
	return e.leaf
}

func (l *Leaves) waitingLocked(id identity.ID, e *entry) error {
	switch {
	case l.ctx == nil:
		return fmt.Errorf("%w for %s: the controller is starting", identity.ErrWaiting, id)
	case e.lastErr != nil:
		return fmt.Errorf("%w for %s: the last request failed: %v", identity.ErrWaiting, id, e.lastErr)
	default:
		return fmt.Errorf("%w for %s: the issuer has not answered yet", identity.ErrWaiting, id)
	}
}

// Current says l is the leaf to serve at now: the newest of its identity,
// with the bundle in force, and before half-life, or after it while its
// renewal is on its way and it has not expired. It starts the renewal.
func (l *Leaves) Current(lf *identity.Leaf, now time.Time) bool {
	l.init()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.byID[lf.ID]
	if e == nil || e.leaf != lf {
		return false
	}
	e.touched = now
	if !bytes.Equal(lf.Bundle, l.Trust()) {
		return false
	}
	if now.Before(lf.RenewAt) {
		return true
	}
	l.askLocked(lf.ID, e, now)
	return now.Before(lf.NotAfter)
}

// askLocked starts a request for id unless one is on its way, the last
// failed too recently, or Start has not run.
func (l *Leaves) askLocked(id identity.ID, e *entry, now time.Time) {
	if e.asking || l.ctx == nil || now.Before(e.retryAt) {
		return
	}
	e.asking = true
	go l.ask(l.ctx, id, now)
}

// ask requests id's leaf. Its back-off is kept on the clock of the caller
// that started it (at), as the times it is compared with are.
func (l *Leaves) ask(ctx context.Context, id identity.ID, at time.Time) {
	start := time.Now()
	lf, err := l.request(ctx, id)
	now := at.Add(time.Since(start))
	l.mu.Lock()
	e := l.byID[id]
	if e == nil { // pruned meanwhile: keep what came
		e = &entry{touched: now}
		l.byID[id] = e
	}
	e.asking = false
	switch {
	case err == nil:
		e.leaf, e.failures, e.lastErr, e.retryAt = lf, 0, nil, time.Time{}
		// The issuer answers again: identities that waited out its
		// outage are asked for at once, not after their back-off.
		for _, other := range l.byID {
			if other.lastErr != nil && !isRefused(other.lastErr) {
				other.retryAt = time.Time{}
			}
		}
		l.Log.Info("Got a workload certificate", "identity", id.String(), "notAfter", lf.NotAfter)
	case ctx.Err() != nil:
		// Stopping: nothing to tell.
	default:
		backoff := min(firstRetry<<min(e.failures, 10), lastRetry)
		if e.leaf != nil && e.leaf.NotAfter.After(now) {
			// A renewal is tried a few more times while the old leaf
			// still serves.
			backoff = min(backoff, max(time.Second, e.leaf.NotAfter.Sub(now)/4))
		}
		e.failures++
		e.lastErr, e.retryAt = err, now.Add(backoff)
		l.Log.Error(err, "Asking the issuer for a workload certificate failed", "identity", id.String(), "retryIn", backoff,
			"servingOldUntil", notAfter(e.leaf))
	}
	l.countWaitingLocked(now)
	notify := l.notify
	l.mu.Unlock()
	if ctx.Err() == nil {
		for _, f := range notify {
			f()
		}
	}
}

func notAfter(lf *identity.Leaf) any {
	if lf == nil {
		return "none"
	}
	return lf.NotAfter
}

// request has one leaf signed, within the in-flight and rate limits.
func (l *Leaves) request(ctx context.Context, id identity.ID) (*identity.Leaf, error) {
	select {
	case l.slots <- struct{}{}:
		defer func() { <-l.slots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.Limiter != nil {
		if err := l.Limiter.Wait(ctx); err != nil {
			return nil, err
		}
	}
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	ttl := l.TTL
	if ttl <= 0 {
		ttl = identity.DefaultLeafTTL
	}
	trust := l.Trust()
	chain, err := l.Sign(ctx, Request{ID: id, Key: key, Duration: ttl})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("reading the issuer's certificate: %w", err)
	}
	// Half way through the life it has from now (its start may be
	// back-dated, or a little ahead).
	from := time.Now()
	if cert.NotBefore.After(from) {
		from = cert.NotBefore
	}
	if t := l.Trust(); t != nil {
		trust = t
	}
	return &identity.Leaf{ID: id, Chain: chain, Key: key, Bundle: trust,
		RenewAt: from.Add(cert.NotAfter.Sub(from) / 2), NotAfter: cert.NotAfter}, nil
}

// countWaitingLocked sets the waiting gauge.
func (l *Leaves) countWaitingLocked(now time.Time) {
	n := 0
	for _, e := range l.byID {
		if e.leaf == nil || !now.Before(e.leaf.RenewAt) {
			n++
		}
	}
	metrics.IdentitiesWaiting.Set(float64(n))
}

// chainsTo says a leaf verifies to the bundle at now.
func chainsTo(lf *identity.Leaf, trust []byte, now time.Time) bool {
	anchors, err := identity.ParseCerts(trust)
	if err != nil {
		return false
	}
	certs := make([]*x509.Certificate, len(lf.Chain))
	for i, d := range lf.Chain {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return false
		}
		certs[i] = c
	}
	roots, links := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	for _, c := range certs[1:] {
		links.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: links, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}
