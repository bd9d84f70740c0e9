package server

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/replicas"
)

// Draining across the replicas of the controller. A pod's pre-stop
// reaches one replica through the Service, but proxies are connected to
// every replica. So each replica says, for every terminating pod it sees
// (every replica watches pods), whether its own proxies are clear of it,
// the question awaitDrain asks, and hands that to Peers (a Lease per
// replica, internal/replicas); the replica that answers a drain waits for
// its own proxies and for the word of every other live replica.

// Peers is the other replicas' word on terminating pods, and where this
// replica's own goes (replicas.Board).
type Peers interface {
	// ReplicaName is this replica's name.
	ReplicaName() string
	// Publish says which terminating pods this replica's proxies are
	// clear of.
	Publish(pods []types.UID)
	// Word is what the other live replicas say of a pod.
	Word(pod types.UID) replicas.Word
	// Changed is closed at the next change of the other replicas' word
	// or life.
	Changed() <-chan struct{}
}

// TerminatingPodsField indexes the pods being deleted (value "true") in
// the cache Options.Pods reads: IndexTerminatingPods sets it up.
const TerminatingPodsField = "weft.terminating"

// IndexTerminatingPods indexes the pods being deleted, which a server
// with Peers lists every time what its proxies hold may have changed.
func IndexTerminatingPods(ctx context.Context, fi client.FieldIndexer) error {
	return fi.IndexField(ctx, &corev1.Pod{}, TerminatingPodsField, func(o client.Object) []string {
		if o.GetDeletionTimestamp() != nil {
			return []string{"true"}
		}
		return nil
	})
}

// clearPods returns the UIDs of the terminating pods that no connected
// proxy may send new requests to.
func (s *Server) clearPods(ctx context.Context) ([]types.UID, error) {
	var pods corev1.PodList
	if err := s.Pods.List(ctx, &pods, client.MatchingFields{TerminatingPodsField: "true"}); err != nil {
		return nil, err
	}
	keys := make([]string, len(pods.Items))
	byKey := make(map[string]*podTarget, len(pods.Items))
	for i := range pods.Items {
		p := &pods.Items[i]
		keys[i] = mesh.Key(p.Namespace, p.Name)
		t := newTarget(p)
		byKey[keys[i]] = &t
	}
	s.sched.targetsOf(byKey)
	targets := make([]podTarget, len(keys))
	for i, k := range keys {
		targets[i] = *byKey[k]
	}
	r, _ := s.reaching(targets)
	var out []types.UID
	for i, p := range pods.Items {
		if r[i].n == 0 {
			out = append(out, p.UID)
		}
	}
	return out, nil
}

// speak hands Peers this replica's word until ctx ends: again whenever
// what the proxies hold may have changed (what wakes the drain waits), no
// more often than every drainRecheck and at least every drainPoll.
func (s *Server) speak(ctx context.Context) {
	failing := false
	for {
		checkedAt := time.Now()
		wake := s.wake.wait()
		uids, err := s.clearPods(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				s.Log.Error(err, "Listing the terminating pods failed; the other replicas wait for this one's word")
			}
			failing = true
		case err == nil:
			failing = false
			s.Peers.Publish(uids)
		}
		timer := time.NewTimer(drainPoll)
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return
		}
		if d := drainRecheck - time.Since(checkedAt); d > 0 {
			pause := time.NewTimer(d)
			select {
			case <-pause.C:
			case <-ctx.Done():
			}
			pause.Stop()
		}
	}
}
