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

func (p podTarget) concerns(name string) bool {
	if len(p.hosts) == 0 {
		return true
	}
	for _, h := range p.hosts {
		if strings.HasSuffix(name, "|"+h) {
			return true
		}
	}
	return false
}

// targetOf adds to t what the current model says of a pod ("<ns>/<name>").
func (s *scheduler) targetOf(pod string, t *podTarget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.shared.Model()
	for _, key := range m.Order {
		svc := m.Services[key]
		for _, e := range svc.Endpoints {
			if e.Pod == pod {
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

// servesAny says whether endpoints resource a lets a client send new
// requests to an address of addrs.
func servesAny(a *anypb.Any, addrs map[string]bool) (bool, error) {
	var cla endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&cla); err != nil {
		return false, err
	}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if addrs[e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()] && takesNewRequests(e.GetHealthStatus()) {
				return true, nil
			}
		}
	}
	return false, nil
}

// reaching returns the connected proxies that may still send new requests
// to the target, and how many proxies it checked.
func (s *Server) reaching(t podTarget) (ids []string, checked int) {
	memo := map[*anypb.Any]bool{}
	for _, v := range s.sched.snapshot() {
		id := v.proxy.ID
		checked++
		h, asked := s.cache.HeldOf(id, resource.EndpointType, t.concerns)
		if !asked {
			// It asked for no endpoints: it holds none.
			continue
		}
		acked, _ := s.acks.Replies(id)
		if acked[resource.EndpointType] != h.Current || h.Version != h.Current {
			// What it acknowledged is not what the cache holds for it now:
			// it may hold anything.
			ids = append(ids, id)
			continue
		}
		for _, r := range h.Resources {
			serves, seen := memo[r.Any]
			if !seen {
				var err error
				if serves, err = servesAny(r.Any, t.addrs); err != nil {
					// Never the case for what the cache made; count it as
					// reaching rather than hide it.
					s.Log.Error(err, "Reading endpoints sent to a proxy failed", "proxy", id, "resource", r.Name)
					serves = true
				}
				memo[r.Any] = serves
			}
			if serves {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids, checked
}

// awaitDrain waits until no connected proxy may send the pod new requests,
// or the wait's bounds (see above) pass.
func (s *Server) awaitDrain(ctx context.Context, ns, name string, limit time.Duration) (DrainResult, error) {
	start := time.Now()
	key := mesh.Key(ns, name)
	res := DrainResult{Pod: key}
	deadline := start.Add(limit)
	var pod corev1.Pod
	for {
		checkedAt := time.Now()
		var fresh corev1.Pod
		switch err := s.Pods.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &fresh); {
		case err == nil:
			pod = fresh
			res.uid = pod.UID
		case apierrors.IsNotFound(err) && pod.Name == "":
			return res, fmt.Errorf("pod %s: %w", key, errNoPod)
		case apierrors.IsNotFound(err):
			// Gone while waiting: its addresses are still looked for.
		default:
			return res, fmt.Errorf("reading pod %s: %w", key, err)
		}
		t := podTarget{addrs: map[string]bool{}}
		for _, ip := range pod.Status.PodIPs {
			t.addrs[ip.IP] = true
		}
		s.sched.targetOf(key, &t)
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
		ids, checked := s.reaching(t)
		res.Seconds, res.Proxies, res.Reaching = time.Since(start).Seconds(), checked, len(ids)
		res.ReachingProxies = ids[:min(len(ids), reachingShown)]
		switch {
		case pod.DeletionTimestamp != nil && len(ids) == 0:
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
		wake := s.wake.wait()
		timer := time.NewTimer(min(time.Until(end), drainPoll))
		select {
		case <-wake:
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

var errNoPod = errors.New("no such pod")

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
			"seconds", res.Seconds, "reaching", res.Reaching, "proxies", res.ReachingProxies)
		if s.Events != nil {
			s.Events.Eventf(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: res.uid}}, nil, corev1.EventTypeWarning, wire.EventDrainTimedOut, "Drain",
				"%d of %d connected proxies could still send the pod new requests after %.1fs (first: %s)",
				res.Reaching, res.Proxies, res.Seconds, strings.Join(res.ReachingProxies, ", "))
		}
	} else {
		s.Log.V(1).Info("A pod's drain ended", "pod", res.Pod, "outcome", res.Outcome, "seconds", res.Seconds, "proxies", res.Proxies)
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
