// Package replicas carries each controller replica's word on terminating
// pods to the other replicas, so that a drain (internal/xds/server,
// drain.go) answered by one replica covers the proxies connected to every
// live one. Each replica keeps a Lease of its own in the controller's
// namespace (wire.DrainLeasePrefix plus its name, labelled
// wire.LabelDrainReplica), renewed as a heartbeat, whose annotation
// wire.AnnotationDrainClear lists the UIDs of the terminating pods its
// proxies are clear of; every replica watches those Leases. No replica
// calls another: none has to find or authenticate the others, the API
// server's RBAC says who may speak for a replica, and a replica's word
// costs the API server one write per heartbeat and one per change of it,
// however many replicas read it.
//
// A replica counts another while its Lease is held and renewed: one that
// stops (it gives its Lease up) is not waited for from then on, and one
// that dies is not waited for once its Lease went unrenewed for its
// duration (Duration) and this replica's own next renewal came through the
// watch (at most Renew later). What it has not listed, it is waited for
// on, up to each drain's own bound.
package replicas

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/coordination/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/wire"
)

// The Leases are watched (list, watch) in the controller's namespace,
// made (create) and renewed and given up (update): the chart's namespace
// Role. Their names are not known ahead (each replica's), so neither
// update nor create can be limited to names.

// Defaults of a Board.
const (
	// DefaultDuration is how long a replica's word holds without a
	// renewal; DefaultRenew how often it is renewed.
	DefaultDuration = 10 * time.Second
	DefaultRenew    = 2 * time.Second
	// DefaultMinInterval is the least time between two writes of a
	// changed word: the changes of a rollout come in bursts.
	DefaultMinInterval = 250 * time.Millisecond
)

// Board is this replica's Lease and its view of the others'. It is a
// manager runnable that needs no leader election: every replica serves
// proxies, and speaks for them.
type Board struct {
	Client kubernetes.Interface
	// Namespace holds the Leases; Name is this replica's, unique among
	// the live replicas (its pod's name).
	Namespace, Name string
	// Owner, when set, owns this replica's Lease (its pod), so that the
	// garbage collector takes the Lease away with the pod.
	Owner *metav1.OwnerReference
	// Duration, Renew and MinInterval are the Defaults when zero.
	Duration, Renew, MinInterval time.Duration
	Log                          logr.Logger

	mu sync.Mutex
	// clear is what this replica says (sorted).
	clear   []types.UID
	peers   map[string]*peer
	ownSeen time.Time
	synced  bool
	changed chan struct{}
	// dirty wakes the writer.
	dirty chan struct{}
}

// NeedLeaderElection is false: every replica speaks for its own proxies.
func (b *Board) NeedLeaderElection() bool { return false }

// LeaseName is the name of this replica's Lease.
func (b *Board) LeaseName() string { return wire.DrainLeasePrefix + b.Name }

// ReplicaName is this replica's name.
func (b *Board) ReplicaName() string { return b.Name }

// Publish says which terminating pods this replica's proxies are clear
// of; it is written at the next chance (at most every MinInterval).
func (b *Board) Publish(pods []types.UID) {
	pods = slices.Clone(pods)
	slices.Sort(pods)
	pods = slices.Compact(pods)
	b.mu.Lock()
	if slices.Equal(pods, b.clear) {
		b.mu.Unlock()
		return
	}
	b.clear = pods
	b.mu.Unlock()
	b.wakeWriter()
}

// wakeWriter has the word written at the next chance.
func (b *Board) wakeWriter() {
	b.mu.Lock()
	dirty := b.dirtyChan()
	b.mu.Unlock()
	select {
	case dirty <- struct{}{}:
	default:
	}
}

// Word is what the other live replicas say of a terminating pod.
func (b *Board) Word(pod types.UID) Word {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.synced {
		return Word{}
	}
	return wordOf(b.peers, pod, b.ownSeen)
}

// Changed is closed at the next change of another replica's word or life,
// or of this replica's own heartbeat as seen through the watch (which is
// when a silent replica may be found gone).
func (b *Board) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// pokeLocked closes the channel Changed handed out.
func (b *Board) pokeLocked() {
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

func (b *Board) dirtyChan() chan struct{} {
	if b.dirty == nil {
		b.dirty = make(chan struct{}, 1)
	}
	return b.dirty
}

func (b *Board) seen(l *coordinationv1.Lease) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers == nil {
		b.peers = map[string]*peer{}
	}
	if l.Name == b.LeaseName() {
		if r := l.Spec.RenewTime; r != nil && ptr.Deref(l.Spec.HolderIdentity, "") == b.Name {
			b.ownSeen = now
			b.pokeLocked()
		}
		return
	}
	before := b.peers[l.Name]
	p := peerOf(l, before, now)
	b.peers[l.Name] = p
	if before == nil || before.holding != p.holding || !before.seenAt.Equal(p.seenAt) || !maps.Equal(before.clear, p.clear) {
		b.pokeLocked()
	}
}

func (b *Board) forget(obj any) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.peers, l.Name)
	b.pokeLocked()
}

// Start watches the Leases and keeps this replica's until ctx ends; then
// it gives the Lease up, so that no drain waits for this replica.
func (b *Board) Start(ctx context.Context) error {
	duration, renew, minInterval := or(b.Duration, DefaultDuration), or(b.Renew, DefaultRenew), or(b.MinInterval, DefaultMinInterval)
	if duration <= renew || duration < time.Second {
		return fmt.Errorf("the drain Lease's duration %v must be a second or more, and longer than its renewal period %v", duration, renew)
	}
	if errs := validation.IsDNS1123Subdomain(b.LeaseName()); len(errs) > 0 {
		return fmt.Errorf("the replica name %q does not make a Lease name: %s", b.Name, strings.Join(errs, "; "))
	}
	factory := informers.NewSharedInformerFactoryWithOptions(b.Client, 0, informers.WithNamespace(b.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = wire.LabelDrainReplica }))
	leases := factory.Coordination().V1().Leases()
	_, err := leases.Informer().AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if l, ok := obj.(*coordinationv1.Lease); ok {
				b.seen(l)
			}
		},
		UpdateFunc: func(_, obj any) {
			if l, ok := obj.(*coordinationv1.Lease); ok {
				b.seen(l)
			}
		},
		DeleteFunc: b.forget,
	})
	if err != nil {
		return fmt.Errorf("watching the replicas' drain Leases: %w", err)
	}
	lister := leases.Lister()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	b.Log.Info("Watching the replicas' drain Leases", "namespace", b.Namespace, "lease", b.LeaseName(), "replica", b.Name)
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil // ctx ended
		}
	}
	b.mu.Lock()
	b.synced = true
	if b.peers == nil {
		b.peers = map[string]*peer{}
	}
	b.pokeLocked()
	dirty := b.dirtyChan()
	b.mu.Unlock()

	w := &writer{b: b, lister: lister, duration: duration}
	tick := time.NewTicker(renew)
	defer tick.Stop()
	var last time.Time
	for {
		if ctx.Err() == nil {
			w.write(ctx, true)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			// Given up with a context of its own: ctx has ended.
			rctx, cancel := context.WithTimeout(context.Background(), renew)
			defer cancel()
			w.write(rctx, false)
			return nil
		case <-tick.C:
		case <-dirty:
			// A changed word waits for MinInterval since the last write.
			if d := minInterval - time.Since(last); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				t.Stop()
			}
		}
	}
}

// writer writes this replica's Lease.
type writer struct {
	b        *Board
	lister   listers.LeaseLister
	duration time.Duration
	// mine is the Lease as last written, which the next update starts
	// from (the watch may not have brought it back yet).
	mine    *coordinationv1.Lease
	failing bool
}

// write renews this replica's Lease with its current word (holding), or
// gives it up.
func (w *writer) write(ctx context.Context, holding bool) {
	b := w.b
	b.mu.Lock()
	said := b.clear
	b.mu.Unlock()
	value, left := encodeClear(said)
	if left > 0 {
		b.Log.Info("Too many terminating pods to list in this replica's drain Lease; the rest are waited for",
			"listed", len(said)-left, "left", left)
	}
	now := metav1.NewMicroTime(time.Now())
	cur := w.mine
	if cur == nil {
		if got, err := w.lister.Leases(b.Namespace).Get(b.LeaseName()); err == nil {
			cur = got
		}
	}
	var l *coordinationv1.Lease
	if cur == nil {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: b.LeaseName()},
			Spec: coordinationv1.LeaseSpec{AcquireTime: &now}}
	} else {
		l = cur.DeepCopy()
	}
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[wire.LabelDrainReplica] = "true"
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	if b.Owner != nil {
		l.OwnerReferences = []metav1.OwnerReference{*b.Owner}
	}
	l.Spec.LeaseDurationSeconds = ptr.To(int32(w.duration / time.Second))
	l.Spec.RenewTime = &now
	if holding {
		l.Spec.HolderIdentity = ptr.To(b.Name)
		l.Annotations[wire.AnnotationDrainClear] = value
	} else {
		l.Spec.HolderIdentity = nil
		delete(l.Annotations, wire.AnnotationDrainClear)
	}
	leases := b.Client.CoordinationV1().Leases(b.Namespace)
	var (
		got *coordinationv1.Lease
		err error
	)
	if cur == nil {
		got, err = leases.Create(ctx, l, metav1.CreateOptions{})
	} else {
		got, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	switch {
	case err == nil:
		w.mine = got
		if w.failing {
			b.Log.Info("Renewing this replica's drain Lease works again", "lease", b.LeaseName())
		}
		w.failing = false
		if !holding {
			b.Log.Info("Gave up this replica's drain Lease: no drain waits for it", "lease", b.LeaseName())
		}
		return
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
		// Start again from what the watch holds, soon.
		w.mine = nil
		b.wakeWriter()
	case apierrors.IsNotFound(err):
		// Deleted under it: made again.
		w.mine = nil
	}
	if !w.failing || !holding {
		b.Log.Error(err, "Writing this replica's drain Lease failed; drains answered by the other replicas wait for it until it expires",
			"lease", b.LeaseName(), "holding", holding)
	}
	w.failing = true
}

// NameOf names a replica: its pod's name (wire.EnvPodName) when given,
// else its host's name and suffix (a replica outside a pod, where
// several may share a host).
func NameOf(pod, host, suffix string) string {
	if pod != "" {
		return pod
	}
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, host)
	name = strings.Trim(name, "-.")
	if name == "" {
		name = "replica"
	}
	return name + "-" + suffix
}

// OwnerOf is the owner of a replica's Lease: its pod, when its name and
// UID are known.
func OwnerOf(pod, uid string) *metav1.OwnerReference {
	if pod == "" || uid == "" {
		return nil
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: pod, UID: types.UID(uid)}
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
