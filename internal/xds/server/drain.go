package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/auth"
)

// Draining a pod that goes away (wire.DrainPath). The answer to "may pod P
// stop taking requests?" is yes once every proxy connected to this server
// that could send P a new request has acknowledged configuration in which
// it cannot: for each connected proxy, the endpoints (EDS) it acknowledged
// are the current ones the cache holds for it, and in them no endpoint at
// an address of P is HEALTHY, UNKNOWN or DEGRADED (weft sends a
// terminating endpoint DRAINING, which grpc-go filters out and Envoy
// sends no new requests; one that stopped serving is left out). A proxy
// whose acknowledged endpoints are not its current ones may hold anything
// and counts as still reaching P. The question is asked about what was
// sent, not about the model, so that a proxy kept on its last good
// configuration (a failed translation, a NACK) is waited for.
//
// The wait is bounded by the pod's grace period: it ends at the pod's
// deletion deadline less a quarter of its grace period, which is left to
// the application to finish the requests in flight after its pre-stop
// returns; by the caller's own bound (wire.DrainTimeoutParam); and by the
// caller hanging up. A pod that is not terminating is answered within
// notTerminatingWait (the controller's cache may see the deletion a
// moment after the kubelet does): a container restarted in place is not
// held up.

const (
	// notTerminatingWait is how long a pod without a deletion timestamp is
	// waited for before the answer says it is not terminating.
	notTerminatingWait = 5 * time.Second
	// drainRecheck is the least time between two checks of one wait
	// (acknowledgements come in bursts), and drainPoll the most.
	drainRecheck = 50 * time.Millisecond
	drainPoll    = time.Second
	// reachingShown bounds the proxies an answer names.
	reachingShown = 10
)

// drainWake wakes the drain waits when what the proxies hold may have
// changed: an acknowledgement, a new model, a proxy gone.
type drainWake struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *drainWake) poke() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

func (w *drainWake) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// DrainResult is the drain endpoint's answer, as JSON.
type DrainResult struct {
	// Pod is "<namespace>/<name>".
	Pod string `json:"pod"`
	// Outcome is metrics.DrainDrained, DrainTimedOut or
	// DrainNotTerminating.
	Outcome string `json:"outcome"`
	// Seconds is how long the answer waited.
	Seconds float64 `json:"seconds"`
	// Proxies is how many connected proxies were checked, Reaching how
	// many of them could still send the pod new requests at the end, and
	// ReachingProxies the first of those.
	Proxies         int      `json:"proxies"`
	Reaching        int      `json:"reaching"`
	ReachingProxies []string `json:"reachingProxies,omitempty"`
	// Replicas are the replicas of the controller whose word was counted
	// (with Peers): the one that answered first, then every other one
	// alive; ReplicasReaching those others that had not said their
	// proxies were clear of the pod when the answer was given;
	// ReplicasGone the replicas not waited for (their Lease given up, or
	// unrenewed past its duration); ReplicasUnread is set while the
	// answering replica has not read the others' Leases yet.
	Replicas         []string `json:"replicas,omitempty"`
	ReplicasReaching []string `json:"replicasReaching,omitempty"`
	ReplicasGone     []string `json:"replicasGone,omitempty"`
	ReplicasUnread   bool     `json:"replicasUnread,omitempty"`

	uid types.UID
}

// podTarget is what a drain looks for in the proxies' endpoints: the
// pod's addresses, and the hosts of the services it is an endpoint of
// (their endpoints resources end in "|<host>"); with no host known, every
// endpoints resource is looked at.
type podTarget struct {
	addrs map[string]bool
	hosts []string
}

func newTarget(pod *corev1.Pod) podTarget {
	t := podTarget{addrs: map[string]bool{}}
	for _, ip := range pod.Status.PodIPs {
		t.addrs[ip.IP] = true
	}
	return t
}

// hostOf is the host an endpoints resource is for: what follows its last
// "|".
func hostOf(name string) string {
	return name[strings.LastIndexByte(name, '|')+1:]
}

// targetsOf adds to each target what the current model says of its pod
// (keyed "<ns>/<name>").
func (s *scheduler) targetsOf(targets map[string]*podTarget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.shared.Model()
	for _, key := range m.Order {
		svc := m.Services[key]
		for _, e := range svc.Endpoints {
			if t := targets[e.Pod]; t != nil {
				t.addrs[e.Address] = true
				if !slices.Contains(t.hosts, svc.Host) {
					t.hosts = append(t.hosts, svc.Host)
				}
			}
		}
	}
}

// takesNewRequests says whether a health status lets a client send an
// endpoint new requests (grpc-go: HEALTHY and UNKNOWN; Envoy: those and,
// when too few are healthy, DEGRADED).
func takesNewRequests(h corev3.HealthStatus) bool {
	return h == corev3.HealthStatus_HEALTHY || h == corev3.HealthStatus_UNKNOWN || h == corev3.HealthStatus_DEGRADED
}

// servingAddrs is the addresses an endpoints resource lets clients send
// new requests to.
func servingAddrs(a *anypb.Any) (map[string]bool, error) {
	var cla endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&cla); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if takesNewRequests(e.GetHealthStatus()) {
				out[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] = true
			}
		}
	}
	return out, nil
}

// reach is the connected proxies that may still send a pod new requests:
// how many, and the first reachingShown.
type reach struct {
	n   int
	ids []string
}

func (r *reach) add(id string) {
	r.n++
	if len(r.ids) < reachingShown {
		r.ids = append(r.ids, id)
	}
}

// reaching returns, for each target, the connected proxies that may still
// send it new requests, and how many proxies it checked. Each endpoints
// resource is decoded once, however many proxies share it and however
// many targets it concerns.
func (s *Server) reaching(targets []podTarget) (out []reach, checked int) {
	out = make([]reach, len(targets))
	if len(targets) == 0 {
		return out, len(s.sched.snapshot())
	}
	// The targets each endpoints resource concerns, by its host; those
	// with no host known are concerned by every one.
	byHost, everywhere := map[string][]int{}, []int(nil)
	for i, t := range targets {
		if len(t.hosts) == 0 {
			everywhere = append(everywhere, i)
		}
		for _, h := range t.hosts {
			byHost[h] = append(byHost[h], i)
		}
	}
	concerns := func(name string) bool { return len(everywhere) > 0 || len(byHost[hostOf(name)]) > 0 }
	type served struct {
		addrs map[string]bool
		bad   bool
	}
	memo := map[*anypb.Any]served{}
	hit := make([]bool, len(targets))
	for _, v := range s.sched.snapshot() {
		id := v.proxy.ID
		checked++
		h, asked := s.cache.HeldOf(id, resource.EndpointType, concerns)
		if !asked {
			// It asked for no endpoints: it holds none.
			continue
		}
		acked, _ := s.acks.Replies(id)
		if acked[resource.EndpointType] != h.Current || h.Version != h.Current {
			// What it acknowledged is not what the cache holds for it now:
			// it may hold anything.
			for i := range out {
				out[i].add(id)
			}
			continue
		}
		clear(hit)
		for _, r := range h.Resources {
			sv, seen := memo[r.Any]
			if !seen {
				addrs, err := servingAddrs(r.Any)
				if err != nil {
					// Never the case for what the cache made; count it as
					// reaching rather than hide it.
					s.Log.Error(err, "Reading endpoints sent to a proxy failed", "proxy", id, "resource", r.Name)
				}
				sv = served{addrs: addrs, bad: err != nil}
				memo[r.Any] = sv
			}
			for _, list := range [][]int{byHost[hostOf(r.Name)], everywhere} {
				for _, i := range list {
					if hit[i] {
						continue
					}
					if sv.bad {
						hit[i] = true
						continue
					}
					for a := range targets[i].addrs {
						if sv.addrs[a] {
							hit[i] = true
							break
						}
					}
				}
			}
		}
		for i, reached := range hit {
			if reached {
				out[i].add(id)
			}
		}
	}
	return out, checked
}

// awaitDrain waits until no connected proxy may send the pod new requests,
// nor, with Peers, any other live replica's, or the wait's bounds (see
// above) pass.
func (s *Server) awaitDrain(ctx context.Context, ns, name string, limit time.Duration) (DrainResult, error) {
	start := time.Now()
	key := mesh.Key(ns, name)
	res := DrainResult{Pod: key}
	deadline := start.Add(limit)
	var pod corev1.Pod
	gone := false
	for {
		checkedAt := time.Now()
		// Waked by a change from here on (the other replicas' too).
		wake, peersChanged := s.wake.wait(), s.peersChanged()
		var fresh corev1.Pod
		switch err := s.Pods.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &fresh); {
		case err == nil:
			pod = fresh
			res.uid = pod.UID
		case apierrors.IsNotFound(err) && pod.Name == "":
			return res, fmt.Errorf("pod %s: %w", key, errNoPod)
		case apierrors.IsNotFound(err):
			// Gone while waiting: its addresses are still looked for; the
			// other replicas no longer speak of it.
			gone = true
		default:
			return res, fmt.Errorf("reading pod %s: %w", key, err)
		}
		t := newTarget(&pod)
		s.sched.targetsOf(map[string]*podTarget{key: &t})
		end := deadline
		if dt := pod.DeletionTimestamp; dt != nil {
			grace := time.Duration(0)
			if g := pod.DeletionGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			end = earliest(end, dt.Add(-grace/4))
		} else {
			end = earliest(end, start.Add(notTerminatingWait))
		}
		r, checked := s.reaching([]podTarget{t})
		res.Seconds, res.Proxies, res.Reaching, res.ReachingProxies = time.Since(start).Seconds(), checked, r[0].n, r[0].ids
		peersClear := true
		if s.Peers != nil && !gone {
			w := s.Peers.Word(pod.UID)
			res.Replicas = append([]string{s.Peers.ReplicaName()}, w.Counted...)
			res.ReplicasReaching, res.ReplicasGone = w.Reaching, w.Gone[:min(len(w.Gone), reachingShown)]
			res.ReplicasUnread = !w.Synced
			peersClear = w.Synced && len(w.Reaching) == 0
		}
		switch {
		case pod.DeletionTimestamp != nil && r[0].n == 0 && peersClear:
			res.Outcome = metrics.DrainDrained
			return res, nil
		case !time.Now().Before(end) || ctx.Err() != nil:
			res.Outcome = metrics.DrainTimedOut
			if pod.DeletionTimestamp == nil {
				res.Outcome = metrics.DrainNotTerminating
			}
			return res, nil
		}
		// Wake on a change, at the latest after drainPoll or at the end;
		// then check no sooner than drainRecheck after the last check.
		timer := time.NewTimer(min(time.Until(end), drainPoll))
		select {
		case <-wake:
		case <-peersChanged:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if d := drainRecheck - time.Since(checkedAt); d > 0 && ctx.Err() == nil {
			pause := time.NewTimer(min(d, max(time.Until(end), 0)))
			select {
			case <-pause.C:
			case <-ctx.Done():
			}
			pause.Stop()
		}
	}
}

// peersChanged is closed at the next change of the other replicas' word,
// and never without Peers.
func (s *Server) peersChanged() <-chan struct{} {
	if s.Peers == nil {
		return nil
	}
	return s.Peers.Changed()
}

var errNoPod = errors.New("no such pod")

// timedOutNote is the DrainTimedOut Event's message: what could still
// send the pod new requests.
func timedOutNote(res DrainResult) string {
	note := fmt.Sprintf("%d of %d proxies connected to this replica could still send the pod new requests after %.1fs", res.Reaching, res.Proxies, res.Seconds)
	if res.Reaching > 0 {
		note += " (first: " + strings.Join(res.ReachingProxies, ", ") + ")"
	}
	switch {
	case res.ReplicasUnread:
		note += "; the other replicas' word was not read yet"
	case len(res.ReplicasReaching) > 0:
		note += fmt.Sprintf("; %d of the %d other replicas had not said their proxies were clear of it: %s",
			len(res.ReplicasReaching), len(res.Replicas)-1, strings.Join(res.ReplicasReaching, ", "))
	}
	return note
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// maxDrainLimit bounds a caller's own timeout.
const maxDrainLimit = time.Hour

// serveDrain answers a pod's pre-stop: who asks is proved (a token proves
// its pod; a mesh certificate its ServiceAccount, and the pod it names in
// wire.DrainNodeHeader must run as it); without Auth (--xds-auth=none, on
// loopback) the header names the pod.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	node := r.Header.Get(wire.DrainNodeHeader)
	limit := maxDrainLimit
	if v := r.URL.Query().Get(wire.DrainTimeoutParam); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxDrainLimit {
			http.Error(w, fmt.Sprintf("%s=%q: want a Go duration above 0 and at most %v", wire.DrainTimeoutParam, v, maxDrainLimit), http.StatusBadRequest)
			return
		}
		limit = d
	}
	if s.Auth != nil {
		who, err := s.Auth.AuthenticateRequest(r)
		if err != nil {
			http.Error(w, err.Error(), auth.HTTPStatus(err))
			return
		}
		if node == "" {
			if who.Pod == "" {
				http.Error(w, fmt.Sprintf("a certificate proves a ServiceAccount, not a pod: name the pod in %s", wire.DrainNodeHeader), http.StatusBadRequest)
				return
			}
			node = who.NodeID()
		}
		if _, err := s.Auth.BindNode(r.Context(), who, node); err != nil {
			http.Error(w, err.Error(), auth.HTTPStatus(err))
			return
		}
	}
	name, ns, ok := wire.ParseNodeID(node)
	if !ok {
		http.Error(w, fmt.Sprintf("%s: %q is not a node id <pod>.<namespace>", wire.DrainNodeHeader, node), http.StatusBadRequest)
		return
	}
	res, err := s.awaitDrain(r.Context(), ns, name, limit)
	switch {
	case errors.Is(err, errNoPod):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	metrics.Drains.WithLabelValues(res.Outcome).Observe(res.Seconds)
	code := http.StatusOK
	if res.Outcome == metrics.DrainTimedOut {
		code = http.StatusGatewayTimeout
		s.Log.Info("A pod's drain timed out: proxies may still send it new requests", "pod", res.Pod,
			"seconds", res.Seconds, "reaching", res.Reaching, "proxies", res.ReachingProxies,
			"replicas", res.Replicas, "replicasReaching", res.ReplicasReaching, "replicasUnread", res.ReplicasUnread)
		if s.Events != nil {
			s.Events.Eventf(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: res.uid}}, nil, corev1.EventTypeWarning, wire.EventDrainTimedOut, "Drain",
				"%s", timedOutNote(res))
		}
	} else {
		s.Log.V(1).Info("A pod's drain ended", "pod", res.Pod, "outcome", res.Outcome, "seconds", res.Seconds, "proxies", res.Proxies,
			"replicas", res.Replicas, "replicasGone", res.ReplicasGone)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(res)
}

// startDrain serves the drain endpoint on DrainAddress until stop, with
// the xDS server's TLS (asking for a client certificate when Auth takes
// them).
func (s *Server) startDrain(errc chan<- error) (stop func(), err error) {
	lis, err := net.Listen("tcp", s.DrainAddress)
	if err != nil {
		return nil, fmt.Errorf("listening for drains on %s: %w", s.DrainAddress, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(wire.DrainPath, s.serveDrain)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if s.TLS != nil {
		cfg := s.TLS.Clone()
		if s.Auth != nil && s.Auth.Roots != nil {
			cfg.ClientAuth = tls.RequestClientCert
		}
		hs.TLSConfig = cfg
		lis = tls.NewListener(lis, cfg)
	}
	go func() {
		if err := hs.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving drains: %w", err)
		}
	}()
	s.drainReady <- lis.Addr().String()
	s.Log.Info("Serving drains", "address", lis.Addr().String(), "authenticated", s.Auth != nil)
	// The waits in flight end with their callers' connections.
	return func() { _ = hs.Close() }, nil
}

// DrainAddr waits until the drain endpoint (DrainAddress) listens and
// returns its address.
func (s *Server) DrainAddr(ctx context.Context) (string, error) {
	select {
	case a := <-s.drainReady:
		s.drainReady <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
