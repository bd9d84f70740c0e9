package replicas

import (
	"maps"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/internal/wire"
)

// maxListed bounds the UIDs one Lease lists (36 characters and a comma
// each; the API server takes 256 KiB of annotations). A pod left out is
// not said to be clear: its drain waits, up to its bound, rather than end
// too soon.
const maxListed = 5000

// encodeClear is the annotation's value for a sorted list of UIDs, and how
// many were left out.
func encodeClear(uids []types.UID) (string, int) {
	n := min(len(uids), maxListed)
	parts := make([]string, n)
	for i, u := range uids[:n] {
		parts[i] = string(u)
	}
	return strings.Join(parts, ","), len(uids) - n
}

// decodeClear reads the annotation's value.
func decodeClear(v string) map[types.UID]bool {
	out := map[types.UID]bool{}
	for u := range strings.SplitSeq(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out[types.UID(u)] = true
		}
	}
	return out
}

// peer is what this replica knows of another one, from its Lease.
type peer struct {
	// name is the replica's (its Lease's holder; the Lease's name less
	// the prefix when it holds none).
	name string
	// holding is false once the replica gave its Lease up (it stopped).
	holding bool
	// seenAt is when this replica saw the Lease renewed last, by its own
	// clock: the other replica's clock is never compared with it.
	seenAt   time.Time
	duration time.Duration
	renewed  time.Time
	clear    map[types.UID]bool
}

// peerOf reads a Lease, given what was known of it before (nil if
// nothing) and the time now.
func peerOf(l *coordinationv1.Lease, before *peer, now time.Time) *peer {
	p := &peer{name: strings.TrimPrefix(l.Name, wire.DrainLeasePrefix), clear: decodeClear(l.Annotations[wire.AnnotationDrainClear])}
	if h := l.Spec.HolderIdentity; h != nil && *h != "" {
		p.name, p.holding = *h, true
	}
	if d := l.Spec.LeaseDurationSeconds; d != nil {
		p.duration = time.Duration(*d) * time.Second
	}
	if r := l.Spec.RenewTime; r != nil {
		p.renewed = r.Time
	}
	p.seenAt = now
	if before != nil && before.renewed.Equal(p.renewed) && before.holding == p.holding {
		// Not renewed since: its heartbeat is as old as it was.
		p.seenAt = before.seenAt
	}
	return p
}

// gone says whether a peer no longer counts: it gave its Lease up, or its
// Lease went unrenewed for its whole duration while this replica's own
// renewals kept coming through the same watch (ownSeen, the last of them
// seen), which shows that the watch was not what stopped. Without that
// proof a peer counts: a replica cut off from the API server waits, up to
// each drain's bound, rather than end drains too soon.
func (p *peer) gone(ownSeen time.Time) bool {
	return !p.holding || ownSeen.After(p.seenAt.Add(p.duration))
}

// Word is what the other replicas say of one terminating pod.
type Word struct {
	// Synced is false until this replica has read the Leases once; until
	// then no word is known, and a drain waits.
	Synced bool
	// Counted are the live replicas (besides this one) whose word counts;
	// Reaching those of them that have not said their proxies are clear
	// of the pod; Gone the replicas that are not waited for (their Lease
	// expired or was given up).
	Counted, Reaching, Gone []string
}

// wordOf is the peers' word on pod.
func wordOf(peers map[string]*peer, pod types.UID, ownSeen time.Time) Word {
	w := Word{Synced: true}
	for _, key := range slices.Sorted(maps.Keys(peers)) {
		p := peers[key]
		switch {
		case p.gone(ownSeen):
			w.Gone = append(w.Gone, p.name)
		case p.clear[pod]:
			w.Counted = append(w.Counted, p.name)
		default:
			w.Counted = append(w.Counted, p.name)
			w.Reaching = append(w.Reaching, p.name)
		}
	}
	return w
}
