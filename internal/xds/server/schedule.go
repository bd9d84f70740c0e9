package server

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/go-logr/logr"

	meshv1 "github.com/weftmesh/weft/api/v1alpha1"
	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/metrics"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/acks"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/sds"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// scheduler decides what each connected proxy is sent. It translates each
// new model once (translate.BuildShared), puts together once per model
// the set that every proxy of a scope shares (the services its identity
// may call, translate.Shared.Scoped) and of a scope and locality
// (translate.Shared.Local), and a proxy's own resources (translate.Own)
// only when its pod's ports or its certificate changed, and hands them to
// the cache. Its state is under its own lock; the cache, the
// acknowledgement tracker and the SDS issuer, which it calls while holding
// it, have locks of their own and never call back into it.
type scheduler struct {
	log        logr.Logger
	options    translate.Options
	cache      *cache.Cache
	acks       *acks.Tracker
	sds        *sds.Issuer // nil when weft certifies no sidecar
	envoyCerts translate.EnvoyCerts
	// waiting, when set, is told of a proxy that starts waiting for its
	// certificate (sds.ErrWaiting), or waits for a new reason. It is
	// called under the lock and must not call back.
	waiting func(translate.Proxy, auth.Identity, error)

	mu sync.Mutex
	// modelled says a model has translated: until then no proxy is sent
	// anything, and one that comes back to a controller that just started
	// keeps what it has rather than an empty mesh (for a sidecar that
	// would be plain text on every port, STRICT or not).
	modelled bool
	// shared is what the model translates to, built once per model.
	shared  *translate.Shared
	proxies map[string]*proxyState
	// scopes are the scopes of the callers of connected proxies in the
	// current model, with the stamp of what each shapes.
	scopes map[mesh.Caller]*scopeState
	// sets are the cache's shared sets (of a scope, or of a scope and a
	// locality), by set name: the Shared each was last made from.
	sets map[string]*translate.Shared
}

// scopeState is one caller's scope in the current model.
type scopeState struct {
	scope mesh.Scope
	stamp acks.Stamp
}

// proxyState is what the scheduler knows of one connected proxy.
type proxyState struct {
	proxy translate.Proxy
	// streams counts the proxy's open streams: it is forgotten with its
	// last.
	streams int
	// who is what its stream proved (with Auth).
	who    auth.Identity
	proved bool
	// inbound is what its own resources were made from (ownMade says they
	// were), and secrets the SDS secrets last given it.
	inbound []translate.PodPort
	ownMade bool
	secrets []*tlsv3.Secret
	// sets are the shared sets it was last assigned.
	sets []string
	// failed is its last translation error; it keeps its last good
	// resources meanwhile.
	failed error
}

func newScheduler(log logr.Logger, o translate.Options, envoyCerts translate.EnvoyCerts, c *cache.Cache, t *acks.Tracker, issuer *sds.Issuer) *scheduler {
	shared, _ := translate.BuildShared(mesh.Build(mesh.Input{}), nil, translate.Options{}) // an empty model always translates
	return &scheduler{log: log, options: o, envoyCerts: envoyCerts, cache: c, acks: t, sds: issuer,
		shared: shared, proxies: map[string]*proxyState{}, scopes: map[mesh.Caller]*scopeState{}, sets: map[string]*translate.Shared{}}
}

// onModel translates a new model and updates every connected proxy. A
// model that fails translation or validation is not used: every proxy
// keeps its last good configuration.
func (s *scheduler) onModel(m *mesh.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	shared, err := translate.BuildShared(m, s.shared, s.options)
	metrics.TranslationShared.Observe(metrics.Since(start))
	if err != nil {
		s.log.Error(err, "Translating the mesh failed; every proxy keeps its last configuration")
		for _, st := range s.proxies {
			st.failed = err
		}
		return
	}
	s.shared, s.scopes, s.modelled = shared, map[mesh.Caller]*scopeState{}, true
	if !m.Changed.IsZero() {
		// The proxies whose configuration this model changes owe it their
		// acknowledgement (metrics.Propagation).
		s.acks.StartRound(m.Changed)
		defer s.acks.EndRound()
	}
	for id, st := range s.proxies {
		s.pushLocked(id, st)
	}
	// Sets that no proxy is assigned any more go.
	inUse := map[string]bool{}
	for _, st := range s.proxies {
		for _, name := range st.sets {
			inUse[name] = true
		}
	}
	for name := range s.sets {
		if !inUse[name] {
			s.cache.RemoveResources(name)
			delete(s.sets, name)
		}
	}
}

// callerLocked is the identity a proxy calls as: what its stream proved,
// or (without authentication) what its pod runs as by the model.
func (s *scheduler) callerLocked(st *proxyState) mesh.Caller {
	if st.proved {
		return mesh.Caller{Namespace: st.who.Namespace, ServiceAccount: st.who.ServiceAccount}
	}
	return s.shared.CallerOf(st.proxy.Pod)
}

// scopeLocked returns a caller's scope in the current model.
func (s *scheduler) scopeLocked(c mesh.Caller) *scopeState {
	if sc, ok := s.scopes[c]; ok {
		return sc
	}
	scope := s.shared.ScopeOf(c)
	// Callers of one scope share its stamp.
	for _, other := range s.scopes {
		if other.scope.ID == scope.ID {
			s.scopes[c] = other
			return other
		}
	}
	sc := &scopeState{scope: scope, stamp: acks.StampOf(s.shared.Model(), scope.Services)}
	s.scopes[c] = sc
	return sc
}

// setLocked makes sure the cache's set name holds what build returns from
// the current model, making it once per model.
func (s *scheduler) setLocked(name string, build func() (*translate.Resources, error)) error {
	if s.sets[name] == s.shared {
		return nil
	}
	r, err := build()
	if err != nil {
		return err
	}
	if err := s.cache.SetResources(name, r.ByType()); err != nil {
		return err
	}
	s.sets[name] = s.shared
	return nil
}

// sharedSetsLocked returns the names of the cache's shared sets a proxy
// gets: its scope's for its variant (its flavour, and for proxyless gRPC
// whether it was injected with pod certificates), and, when its flavour
// has endpoints that depend on the caller's locality, its scope's at its
// locality (endpoints, the same for every variant of the flavour).
func (s *scheduler) sharedSetsLocked(p translate.Proxy, sc mesh.Scope) ([]string, error) {
	name := "scope/" + string(p.Variant()) + "/" + sc.ID
	if err := s.setLocked(name, func() (*translate.Resources, error) { return s.shared.Scoped(p.Variant(), sc) }); err != nil {
		return nil, err
	}
	sets := []string{name}
	if !s.shared.HasLocal(p.Flavour) {
		return sets, nil
	}
	at := s.shared.LocalityOf(p.Pod)
	local := "local/" + string(p.Flavour) + "/" + at.Region + "/" + at.Zone + "/" + sc.ID
	err := s.setLocked(local, func() (*translate.Resources, error) {
		r, err := s.shared.Local(p.Flavour, at, sc)
		if err != nil {
			return nil, err
		}
		return &translate.Resources{Endpoints: r.Endpoints}, nil
	})
	if err != nil {
		return nil, err
	}
	return append(sets, local), nil
}

// connect registers one more stream of a proxy; a proxy's first is sent
// its configuration, once there is a model.
func (s *scheduler) connect(p translate.Proxy, who auth.Identity, proved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.proxies[p.ID]; ok {
		st.streams++
		if proved {
			st.who, st.proved = who, true
		}
		return
	}
	st := &proxyState{proxy: p, streams: 1, who: who, proved: proved}
	s.proxies[p.ID] = st
	s.acks.Connect(p.ID, string(p.Flavour))
	s.log.Info("A proxy connected", "proxy", p.ID)
	if s.modelled {
		s.pushLocked(p.ID, st)
	}
}

// disconnect drops one stream of a proxy, and forgets the proxy with its
// last.
func (s *scheduler) disconnect(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.proxies[id]
	if !ok {
		return
	}
	if st.streams--; st.streams > 0 {
		return
	}
	delete(s.proxies, id)
	if s.sds != nil {
		s.sds.Forget(id)
	}
	s.acks.Disconnect(id)
	s.cache.RemoveProxy(id)
	s.log.Info("A proxy disconnected", "proxy", id)
}

// renew pushes to every sidecar whose leaf is due, and retries those whose
// translation failed (the CA may have been loading).
func (s *scheduler) renew(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.modelled {
		return
	}
	for id, st := range s.proxies {
		if st.proxy.Flavour == wire.FlavourEnvoy && (st.failed != nil || (s.sds != nil && s.sds.Due(id, now))) {
			s.pushLocked(id, st)
		}
	}
}

// pushLocked gives one proxy its scope's shared sets and, for a sidecar or
// a gRPC server, its own resources. A proxy whose translation fails keeps
// what it had.
func (s *scheduler) pushLocked(id string, st *proxyState) {
	start := time.Now()
	sc := s.scopeLocked(s.callerLocked(st))
	err := s.assignLocked(id, st, sc.scope)
	metrics.TranslationProxy.Observe(metrics.Since(start))
	if err == nil {
		s.acks.Pushed(id, sc.stamp, ownStamp(st.inbound, s.shared.Model()))
		s.acks.PlainText(id, s.plainTextLocked(st))
		st.failed = nil
		return
	}
	if st.failed == nil || st.failed.Error() != err.Error() {
		var leaf *sds.LeafError
		switch {
		case errors.Is(err, sds.ErrWaiting):
			s.log.Info("A proxy waits for its certificate", "proxy", id, "reason", err.Error())
			if s.waiting != nil {
				s.waiting(st.proxy, st.who, err)
			}
		case errors.As(err, &leaf):
			metrics.CertificatesRefused.WithLabelValues(metrics.DeliverySDS, metrics.ReasonSignerFailed).Inc()
			s.log.Error(err, "Certifying a sidecar failed; it keeps its last configuration", "proxy", id)
		default:
			s.log.Error(err, "Translating for a proxy failed; it keeps its last configuration", "proxy", id)
		}
	}
	st.failed = err
}

func (s *scheduler) assignLocked(id string, st *proxyState, sc mesh.Scope) error {
	ports := s.shared.InboundPorts(st.proxy.Pod)
	shared, err := s.sharedSetsLocked(st.proxy, sc)
	if err != nil {
		return err
	}
	assign := func(own bool) error {
		sets := shared
		if own {
			sets = append(slices.Clone(shared), cache.ProxySet(id))
		}
		if err := s.cache.Assign(id, sets...); err != nil {
			return err
		}
		st.sets = shared
		return nil
	}
	if st.proxy.Flavour != wire.FlavourEnvoy {
		// A proxyless proxy has a set of its own only when its pod
		// serves mesh ports (its servers' Listeners).
		if len(ports) == 0 && !st.ownMade {
			return assign(false)
		}
		if !st.ownMade || !slices.Equal(st.inbound, ports) {
			if err := s.setOwnLocked(id, st, ports, nil); err != nil {
				return err
			}
		}
		return assign(true)
	}
	// A sidecar's own resources change only with its pod's ports and its
	// certificate.
	var secrets []*tlsv3.Secret
	if s.sds != nil && st.proved {
		var err error
		leafID := identity.ID{TrustDomain: s.options.TrustDomain, Namespace: st.who.Namespace, ServiceAccount: st.who.ServiceAccount}
		if secrets, err = s.sds.Secrets(id, leafID, time.Now()); err != nil {
			return err
		}
	}
	if s.envoyCerts == translate.EnvoyCertsSDS && len(secrets) == 0 {
		// Its TLS contexts name SDS secrets that would never come.
		return fmt.Errorf("proxy %s: its configuration names the SDS secrets %s and %s, and weft has no certificate for it (it proved no identity)",
			id, translate.SecretCertificate, translate.SecretRoots)
	}
	if !st.ownMade || !slices.Equal(st.inbound, ports) || !slices.Equal(st.secrets, secrets) {
		if err := s.setOwnLocked(id, st, ports, secrets); err != nil {
			return err
		}
	}
	return assign(true)
}

// plainTextLocked names the PeerAuthentications that set STRICT on ports
// a proxy serves in plain text: a proxyless gRPC server has no certificate
// unless it was injected with pod certificates (translate.Proxy.MTLS),
// and without one its server Listener takes plain text whatever the mode.
func (s *scheduler) plainTextLocked(st *proxyState) []mesh.Ref {
	if st.proxy.Flavour == wire.FlavourEnvoy || st.proxy.MTLS() {
		return nil
	}
	var out []mesh.Ref
	for _, p := range st.inbound {
		if p.MTLS != meshv1.MTLSStrict {
			continue
		}
		for _, r := range p.ModeBy {
			if r.Kind != "" && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

// ownStamp is what shapes a proxy's own resources: the MeshService of each
// port its pod serves (its allow rules), the TrafficPolicy in force there
// (its rate limit), and the PeerAuthentications that set the port's mTLS
// mode.
func ownStamp(ports []translate.PodPort, m *mesh.Model) acks.Stamp {
	if len(ports) == 0 {
		return nil
	}
	st := acks.Stamp{}
	for _, p := range ports {
		ns, name, _ := strings.Cut(p.Owner, "/")
		st[mesh.Ref{Kind: mesh.KindMeshService, Namespace: ns, Name: name}] = p.Generation
		if p.Policy != "" {
			st[mesh.Ref{Kind: mesh.KindTrafficPolicy, Namespace: ns, Name: p.Policy}] = p.PolicyGeneration
		}
		for _, r := range p.ModeBy {
			if r.Kind != "" {
				st[r] = m.Shaping[r]
			}
		}
	}
	return st
}

// setOwnLocked translates and caches a proxy's own resources.
func (s *scheduler) setOwnLocked(id string, st *proxyState, ports []translate.PodPort, secrets []*tlsv3.Secret) error {
	own, err := translate.Own(s.shared, st.proxy)
	if err != nil {
		return err
	}
	own.Secrets = secrets
	if err := s.cache.SetResources(cache.ProxySet(id), own.ByType()); err != nil {
		return err
	}
	st.inbound, st.secrets, st.ownMade = ports, secrets, true
	return nil
}

// proxyView is what the status service shows of a proxy.
type proxyView struct {
	proxy  translate.Proxy
	who    auth.Identity
	proved bool
}

// snapshot lists the connected proxies, sorted by id.
func (s *scheduler) snapshot() []proxyView {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]proxyView, 0, len(s.proxies))
	for _, st := range s.proxies {
		out = append(out, proxyView{proxy: st.proxy, who: st.who, proved: st.proved})
	}
	slices.SortFunc(out, func(a, b proxyView) int { return cmp.Compare(a.proxy.ID, b.proxy.ID) })
	return out
}

// servicesNamed returns the MeshServices ("<namespace>/<name>") of the
// current model whose host a proxy's words name (in a listener, route,
// cluster or endpoints name: "<host>:<port>", "outbound|<port>|<subset>|<host>"),
// sorted. A NACK is rare: the model's services are looked through each
// time.
func (s *scheduler) servicesNamed(words string) []string {
	hosts := map[string]bool{}
	for _, tok := range strings.FieldsFunc(words, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-')
	}) {
		hosts[strings.TrimSuffix(tok, ".")] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.shared.Model()
	var out []string
	for _, key := range m.Order {
		if svc := m.Services[key]; svc != nil && hosts[svc.Host] {
			out = append(out, key)
		}
	}
	return out
}

// podOf returns a connected proxy and what its stream proved.
func (s *scheduler) podOf(id string) (translate.Proxy, auth.Identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.proxies[id]; ok {
		return st.proxy, st.who, true
	}
	return translate.Proxy{}, auth.Identity{}, false
}

// failure is a proxy's last translation error, if any.
func (s *scheduler) failure(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.proxies[id]; ok {
		return st.failed
	}
	return nil
}
