package server

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/acks"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/sds"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Names of the cache's resource sets that every proxy of a flavour shares.
const (
	grpcSet  = "flavour/grpc"
	envoySet = "flavour/envoy"
)

// scheduler decides what each connected proxy is sent. It translates each
// new model once for every proxy of a flavour (translate.BuildShared), and
// a proxy's own resources (translate.Own) only when its pod's ports or its
// certificate changed, and hands both to the cache. Its state is under its
// own lock; the cache, the acknowledgement tracker and the SDS issuer,
// which it calls while holding it, have locks of their own and never call
// back into it.
type scheduler struct {
	log        logr.Logger
	options    translate.Options
	cache      *cache.Cache
	acks       *acks.Tracker
	sds        *sds.Issuer // nil when weft certifies no sidecar
	envoyCerts translate.EnvoyCerts

	mu sync.Mutex
	// shared is what the model translates to for every proxy, and stamp
	// the generations it was made from; both are built once per model.
	shared  *translate.Shared
	stamp   acks.Stamp
	proxies map[string]*proxyState
	// local are the cache's sets of endpoints ordered by caller locality
	// (translate.Shared.Local), by set name: the Shared each was last
	// made from.
	local map[string]*translate.Shared
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
	// local is the set of endpoints by locality it was last assigned.
	local string
	// failed is its last translation error; it keeps its last good
	// resources meanwhile.
	failed error
}

func newScheduler(log logr.Logger, o translate.Options, envoyCerts translate.EnvoyCerts, c *cache.Cache, t *acks.Tracker, issuer *sds.Issuer) *scheduler {
	empty := mesh.Build(mesh.Input{})
	shared, _ := translate.BuildShared(empty, nil, translate.Options{}) // an empty model always translates
	s := &scheduler{log: log, options: o, envoyCerts: envoyCerts, cache: c, acks: t, sds: issuer,
		shared: shared, stamp: acks.StampOf(empty), proxies: map[string]*proxyState{}, local: map[string]*translate.Shared{}}
	_ = s.setShared(shared) // nor does it fail to cache
	return s
}

// onModel translates a new model and updates every connected proxy. A
// model whose shared resources fail validation is not used: every proxy
// keeps its last good configuration.
func (s *scheduler) onModel(m *mesh.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	shared, err := translate.BuildShared(m, s.shared, s.options)
	if err == nil {
		err = s.setShared(shared)
	}
	if err != nil {
		s.log.Error(err, "Translating the mesh failed; every proxy keeps its last configuration")
		for _, st := range s.proxies {
			st.failed = err
		}
		return
	}
	s.shared, s.stamp = shared, acks.StampOf(m)
	for id, st := range s.proxies {
		s.pushLocked(id, st)
	}
	// Sets of localities where no proxy is any more go.
	inUse := map[string]bool{}
	for _, st := range s.proxies {
		inUse[st.local] = true
	}
	for name, made := range s.local {
		if made != shared && !inUse[name] {
			s.cache.RemoveResources(name)
			delete(s.local, name)
		}
	}
}

// localSetLocked returns the name of the cache's set that holds the
// endpoints a proxy gets by its locality, made from the current model
// ("" when its flavour has none).
func (s *scheduler) localSetLocked(p translate.Proxy) (string, error) {
	if !s.shared.HasLocal(p.Flavour) {
		return "", nil
	}
	at := s.shared.LocalityOf(p.Pod)
	name := "local/" + string(p.Flavour) + "/" + at.Region + "/" + at.Zone
	if s.local[name] == s.shared {
		return name, nil
	}
	r, err := s.shared.Local(p.Flavour, at)
	if err != nil {
		return "", err
	}
	if err := s.cache.SetResources(name, map[string][]types.Resource{resource.EndpointType: r.ByType()[resource.EndpointType]}); err != nil {
		return "", err
	}
	s.local[name] = s.shared
	return name, nil
}

// setShared hands the flavours' shared sets to the cache.
func (s *scheduler) setShared(sh *translate.Shared) error {
	return errors.Join(s.cache.SetResources(grpcSet, sh.GRPC.ByType()), s.cache.SetResources(envoySet, sh.Envoy.ByType()))
}

// connect registers one more stream of a proxy; a proxy's first is sent
// its configuration.
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
	s.pushLocked(p.ID, st)
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
	for id, st := range s.proxies {
		if st.proxy.Flavour == wire.FlavourEnvoy && (st.failed != nil || (s.sds != nil && s.sds.Due(id, now))) {
			s.pushLocked(id, st)
		}
	}
}

// pushLocked gives one proxy its flavour's shared set and, for a sidecar,
// its own resources. A proxy whose translation fails keeps what it had.
func (s *scheduler) pushLocked(id string, st *proxyState) {
	err := s.assignLocked(id, st)
	if err == nil {
		s.acks.Pushed(id, s.stamp)
		st.failed = nil
		return
	}
	if st.failed == nil || st.failed.Error() != err.Error() {
		s.log.Error(err, "Translating for a proxy failed; it keeps its last configuration", "proxy", id)
	}
	st.failed = err
}

func (s *scheduler) assignLocked(id string, st *proxyState) error {
	ports := s.shared.InboundPorts(st.proxy.Pod)
	local, err := s.localSetLocked(st.proxy)
	if err != nil {
		return err
	}
	assign := func(flavourSet string, own bool) error {
		sets := []string{flavourSet}
		if local != "" {
			sets = append(sets, local)
		}
		if own {
			sets = append(sets, cache.ProxySet(id))
		}
		if err := s.cache.Assign(id, sets...); err != nil {
			return err
		}
		st.local = local
		return nil
	}
	if st.proxy.Flavour != wire.FlavourEnvoy {
		// A proxyless proxy has a set of its own only when its pod
		// serves mesh ports (its servers' Listeners).
		if len(ports) == 0 && !st.ownMade {
			return assign(grpcSet, false)
		}
		if !st.ownMade || !slices.Equal(st.inbound, ports) {
			if err := s.setOwnLocked(id, st, ports, nil); err != nil {
				return err
			}
		}
		return assign(grpcSet, true)
	}
	// A sidecar's own resources change only with its pod's ports and its
	// certificate.
	var secrets []*tlsv3.Secret
	if s.sds != nil && st.proved {
		var err error
		if secrets, err = s.sds.Secrets(id, st.who.Namespace, st.who.ServiceAccount, time.Now()); err != nil {
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
	return assign(envoySet, true)
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

// failure is a proxy's last translation error, if any.
func (s *scheduler) failure(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.proxies[id]; ok {
		return st.failed
	}
	return nil
}
