// Package server serves the mesh to proxies over ADS: it translates the
// current mesh model for each proxy that connects, and again for every
// proxy when the model changes, into weft's xDS cache.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/internal/identity"
	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/wire"
	"github.com/weftmesh/weft/internal/xds/acks"
	"github.com/weftmesh/weft/internal/xds/auth"
	"github.com/weftmesh/weft/internal/xds/cache"
	"github.com/weftmesh/weft/internal/xds/translate"
)

// Options configure a server; New checks them.
type Options struct {
	// Address to listen on, for example "127.0.0.1:15012".
	Address string
	Log     logr.Logger
	// Auth, when set, authenticates every stream (see package auth): a
	// stream that proves no pod receives nothing, and a proxy may only use
	// its own pod's node id. TLS, when set, is the listener's TLS.
	Auth *auth.Authenticator
	TLS  *tls.Config
	// StatusAddress, when set, serves the Client Status Discovery Service
	// (what `weft status` reads) on a listener of its own, without
	// authentication: bind it to loopback and reach it through kubectl
	// port-forward, which the API server authorizes. With Auth set, CSDS
	// is served there only.
	StatusAddress string
	// Signer, when set with Auth, certifies each sidecar's proven identity:
	// a leaf for spiffe://<TrustDomain>/ns/<ns>/sa/<sa>, made in memory,
	// served only on that sidecar's own stream (SDS secrets "default" and
	// "ROOTCA"), renewed at half-life. LeafTTL is its lifetime (default
	// 24 h).
	Signer      func() *identity.Root
	TrustDomain string
	LeafTTL     time.Duration
	// ProxylessMTLS has proxyless gRPC workloads use mTLS where their
	// PeerAuthentication says STRICT (translate.Options): set it when
	// workloads get pod certificates, which grpc-go reads as files.
	ProxylessMTLS bool
	// EnvoyCerts says where sidecars read their certificates, for the TLS
	// that PeerAuthentications ask of them (translate.Options).
	EnvoyCerts translate.EnvoyCerts
	// PodCertificates, when set (the manager's cache), is where weft status
	// finds the pod certificates issued for PodCertificateSigner to each
	// proxy's pod.
	PodCertificates      client.Reader
	PodCertificateSigner string
	// Observe is what sidecars log and trace (translate.Observability).
	Observe translate.Observability
}

// Validate says what is wrong with a combination of options.
func (o Options) Validate() error {
	var errs []error
	if o.Address == "" {
		errs = append(errs, errors.New("Address: the xDS server needs an address to listen on"))
	}
	if o.Signer != nil {
		if o.Auth == nil {
			errs = append(errs, errors.New("Signer: certificates are served only to proxies that proved their pod; set Auth too"))
		}
		if o.TrustDomain == "" {
			errs = append(errs, errors.New("TrustDomain: a Signer needs the trust domain its SPIFFE IDs are in"))
		}
		if o.LeafTTL != 0 && (o.LeafTTL < identity.MinLeafTTL || o.LeafTTL > identity.MaxLeafTTL) {
			errs = append(errs, fmt.Errorf("LeafTTL: %v is outside [%v, %v]", o.LeafTTL, identity.MinLeafTTL, identity.MaxLeafTTL))
		}
	}
	if o.EnvoyCerts == translate.EnvoyCertsSDS && o.Signer == nil {
		errs = append(errs, errors.New("EnvoyCerts: SDS certificates need a Signer, or every sidecar's TLS would name secrets that never come"))
	}
	if (o.PodCertificates == nil) != (o.PodCertificateSigner == "") {
		errs = append(errs, errors.New("PodCertificates and PodCertificateSigner: set both or neither"))
	}
	if o.Auth != nil && o.TLS == nil {
		errs = append(errs, errors.New("TLS: an authenticating server must serve TLS, or tokens would cross the network in plain text"))
	}
	return errors.Join(errs...)
}

// Server is the ADS server. It is a manager runnable that needs no leader
// election: every replica serves proxies.
type Server struct {
	Options

	cache *cache.Cache

	mu    sync.Mutex
	model *mesh.Model
	// shared is what the model translates to for every proxy, and stamp
	// the generations it was made from; both are built once per model.
	shared  *translate.Shared
	stamp   acks.Stamp
	proxies map[string]translate.Proxy
	// inbound is what each sidecar's own resources were made from, and
	// ownSecrets the secrets last given them; proxyIdentity is what each
	// proxy proved, and leaves its certificate.
	inbound       map[string][]translate.PodPort
	ownSecrets    map[string][]*tlsv3.Secret
	proxyIdentity map[string]auth.Identity
	leaves        map[string]*leaf
	// failed is the last translation error per proxy; the proxy keeps its
	// last good resources meanwhile.
	failed map[string]error

	// streams maps each stream to its proxy; a proxy with no stream left
	// is forgotten. identities holds what each stream proved (with Auth).
	streams    map[int64]string
	identities map[int64]auth.Identity
	// acks tracks what each proxy acknowledged, under its own lock.
	acks *acks.Tracker

	ready, statusReady chan string
}

// New returns a server with an empty model, or what is wrong with the
// options.
func New(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("configuring the xDS server: %w", err)
	}
	empty := mesh.Build(mesh.Input{})
	shared, _ := translate.BuildShared(empty, nil, translate.Options{}) // an empty model always translates
	c := cache.New()
	s := &Server{Options: o, cache: c, model: empty, shared: shared, stamp: acks.StampOf(empty), acks: acks.New(c.Versions, o.Log),
		proxies: map[string]translate.Proxy{}, inbound: map[string][]translate.PodPort{}, ownSecrets: map[string][]*tlsv3.Secret{}, proxyIdentity: map[string]auth.Identity{}, leaves: map[string]*leaf{}, failed: map[string]error{}, streams: map[int64]string{}, identities: map[int64]auth.Identity{}, ready: make(chan string, 1), statusReady: make(chan string, 1)}
	_ = s.setShared(shared) // nor does it fail to cache
	return s, nil
}

// NeedLeaderElection is false.
func (s *Server) NeedLeaderElection() bool { return false }

// Addr waits until the server listens and returns its address.
func (s *Server) Addr(ctx context.Context) (string, error) {
	select {
	case a := <-s.ready:
		s.ready <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Names of the cache's resource sets that every proxy of a flavour shares.
const (
	grpcSet  = "flavour/grpc"
	envoySet = "flavour/envoy"
)

// renewLeaves replaces sidecars' certificates at half-life.
func (s *Server) renewLeaves(ctx context.Context) {
	every := 10 * time.Second
	if s.LeafTTL > 0 && s.LeafTTL/20 < every {
		every = max(s.LeafTTL/20, time.Second)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for id, p := range s.proxies {
				// Renew what is due, and retry what failed (the CA may
				// have been loading).
				if p.Flavour == wire.FlavourEnvoy && (s.renewalDueLocked(id, now) || s.failed[id] != nil) {
					s.pushLocked(id, p)
				}
			}
			s.mu.Unlock()
		}
	}
}

// StatusAddr waits until the status listener (StatusAddress) listens and
// returns its address.
func (s *Server) StatusAddr(ctx context.Context) (string, error) {
	select {
	case a := <-s.statusReady:
		s.statusReady <- a
		return a, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// OnModel takes a new model and updates every connected proxy. A model
// whose shared resources fail validation is not used: every proxy keeps
// its last good configuration.
func (s *Server) OnModel(_ context.Context, m *mesh.Model) {
	s.mu.Lock()
	defer s.mu.Unlock()
	shared, err := translate.BuildShared(m, s.shared, translate.Options{ProxylessMTLS: s.ProxylessMTLS, EnvoyCerts: s.EnvoyCerts, TrustDomain: s.TrustDomain, Observe: s.Observe})
	if err != nil {
		s.Log.Error(err, "Translating the mesh failed; every proxy keeps its last configuration")
		for id := range s.proxies {
			s.failed[id] = err
		}
		return
	}
	if err := s.setShared(shared); err != nil {
		s.Log.Error(err, "Caching the mesh failed; every proxy keeps its last configuration")
		for id := range s.proxies {
			s.failed[id] = err
		}
		return
	}
	s.model, s.shared, s.stamp = m, shared, acks.StampOf(m)
	for id, p := range s.proxies {
		s.pushLocked(id, p)
	}
}

// setShared hands the flavours' shared sets to the cache.
func (s *Server) setShared(sh *translate.Shared) error {
	return errors.Join(s.cache.SetResources(grpcSet, sh.GRPC.ByType()), s.cache.SetResources(envoySet, sh.Envoy.ByType()))
}

// pushLocked gives one proxy its flavour's shared set and, for a sidecar,
// its own resources. A proxy whose translation fails keeps what it had.
func (s *Server) pushLocked(id string, p translate.Proxy) {
	err := s.assignLocked(id, p)
	if err == nil {
		s.acks.Pushed(id, s.stamp)
		delete(s.failed, id)
		return
	}
	if s.failed[id] == nil || s.failed[id].Error() != err.Error() {
		s.Log.Error(err, "Translating for a proxy failed; it keeps its last configuration", "proxy", id)
	}
	s.failed[id] = err
}

func (s *Server) assignLocked(id string, p translate.Proxy) error {
	if p.Flavour != wire.FlavourEnvoy {
		return s.assignGRPCLocked(id, p)
	}
	// A sidecar's own resources change only with its pod's ports and its
	// certificate.
	ports := s.shared.InboundPorts(p.Pod)
	secrets, err := s.secretsLocked(id, time.Now())
	if err != nil {
		return err
	}
	if s.EnvoyCerts == translate.EnvoyCertsSDS && len(secrets) == 0 {
		// Its TLS contexts name SDS secrets that would never come.
		return fmt.Errorf("proxy %s: its configuration names the SDS secrets %s and %s, and weft has no certificate for it (it proved no identity)",
			id, translate.SecretCertificate, translate.SecretRoots)
	}
	prev, ok := s.inbound[id]
	if !ok || !slices.Equal(prev, ports) || !slices.Equal(s.ownSecrets[id], secrets) {
		own, err := translate.Own(s.shared, p)
		if err != nil {
			return err
		}
		own.Secrets = secrets
		if err := s.cache.SetResources(cache.ProxySet(id), own.ByType()); err != nil {
			return err
		}
		s.inbound[id], s.ownSecrets[id] = ports, secrets
	}
	return s.cache.Assign(id, envoySet, cache.ProxySet(id))
}

// assignGRPCLocked gives a proxyless gRPC proxy the shared set and, when
// its pod serves mesh ports, its servers' Listeners (a set of its own).
func (s *Server) assignGRPCLocked(id string, p translate.Proxy) error {
	ports := s.shared.InboundPorts(p.Pod)
	prev, had := s.inbound[id]
	if len(ports) == 0 && !had {
		return s.cache.Assign(id, grpcSet)
	}
	if !had || !slices.Equal(prev, ports) {
		own, err := translate.Own(s.shared, p)
		if err != nil {
			return err
		}
		if err := s.cache.SetResources(cache.ProxySet(id), own.ByType()); err != nil {
			return err
		}
		s.inbound[id] = ports
	}
	return s.cache.Assign(id, grpcSet, cache.ProxySet(id))
}

// onRequest and onDeltaRequest register a proxy the first time it asks
// for anything, before the cache sees its request, and record ACKs and
// NACKs. Later delta requests carry no node; the stream names it.
func (s *Server) onRequest(stream int64, req *discovery.DiscoveryRequest) error {
	return s.request(stream, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
}

func (s *Server) onDeltaRequest(stream int64, req *discovery.DeltaDiscoveryRequest) error {
	return s.request(stream, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
}

func (s *Server) request(stream int64, node *corev3.Node, typeURL, nonce, nack string) error {
	if err := s.register(stream, node); err != nil {
		return err
	}
	s.mu.Lock()
	id := s.streams[stream]
	s.mu.Unlock()
	s.acks.Replied(id, typeURL, nonce, nack)
	return nil
}

func (s *Server) register(stream int64, node *corev3.Node) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := node.GetId()
	if id == "" {
		if _, known := s.streams[stream]; known {
			return nil
		}
		return errors.New("the first request of a stream names no node")
	}
	if s.Auth != nil {
		who, ok := s.identities[stream]
		if !ok {
			return status.Error(codes.Unauthenticated, "the stream proved no identity")
		}
		bound, err := s.Auth.BindNode(context.Background(), who, id)
		if err != nil {
			s.Log.Info("A proxy used a node id that is not its own", "proxy", id, "namespace", who.Namespace,
				"serviceAccount", who.ServiceAccount, "pod", who.Pod, "reason", err.Error())
			return err
		}
		s.identities[stream] = bound
	}
	s.streams[stream] = id
	if who, ok := s.identities[stream]; ok {
		s.proxyIdentity[id] = who
	}
	if _, known := s.proxies[id]; known {
		return nil
	}
	p := ProxyFor(node)
	s.proxies[id] = p
	s.acks.Connect(id)
	s.Log.Info("A proxy connected", "proxy", id)
	s.pushLocked(id, p)
	return nil
}

// ProxyFor describes the proxy behind a node: its flavour from the node
// metadata (wire.MetaFlavour; grpc when absent), and its pod from the node
// id (wire.NodeID).
func ProxyFor(node *corev3.Node) translate.Proxy {
	p := translate.Proxy{ID: node.GetId(), Flavour: wire.FlavourGRPC}
	if node.GetMetadata().GetFields()[wire.MetaFlavour].GetStringValue() == string(wire.FlavourEnvoy) {
		p.Flavour = wire.FlavourEnvoy
	}
	if pod, ns, ok := wire.ParseNodeID(p.ID); ok {
		p.Namespace = ns
		p.Pod = mesh.Key(ns, pod)
	}
	return p
}

// onOpen records what a stream proved, when streams authenticate.
func (s *Server) onOpen(ctx context.Context, stream int64, _ string) error {
	if s.Auth == nil {
		return nil
	}
	who, ok := auth.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "the stream proved no identity")
	}
	s.mu.Lock()
	s.identities[stream] = who
	s.mu.Unlock()
	return nil
}

// onClosed forgets a proxy when its last stream ends.
func (s *Server) onClosed(stream int64, _ *corev3.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.identities, stream)
	id, ok := s.streams[stream]
	if !ok {
		return
	}
	delete(s.streams, stream)
	for _, other := range s.streams {
		if other == id {
			return
		}
	}
	delete(s.proxies, id)
	delete(s.inbound, id)
	delete(s.ownSecrets, id)
	delete(s.proxyIdentity, id)
	delete(s.leaves, id)
	delete(s.failed, id)
	s.acks.Disconnect(id)
	s.cache.RemoveProxy(id)
	s.Log.Info("A proxy disconnected", "proxy", id)
}

// Proxies lists the connected proxies' ids.
func (s *Server) Proxies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proxyIDsLocked()
}

func (s *Server) proxyIDsLocked() []string {
	out := make([]string, 0, len(s.proxies))
	for id := range s.proxies {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.Address)
	if err != nil {
		return fmt.Errorf("listening for xDS on %s: %w", s.Address, err)
	}
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(newSharedCodec())}
	if s.TLS != nil {
		cfg := s.TLS
		if s.Auth != nil && s.Auth.Roots != nil {
			// Ask for a client certificate; the authenticator checks it
			// against the mesh's current roots.
			cfg = cfg.Clone()
			cfg.ClientAuth = tls.RequestClientCert
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	if s.Auth != nil {
		opts = append(opts, grpc.ChainStreamInterceptor(s.Auth.StreamInterceptor()), grpc.ChainUnaryInterceptor(s.Auth.UnaryInterceptor()))
	}
	gs := grpc.NewServer(opts...)
	xs := cache.NewADS(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc: s.onOpen, DeltaStreamOpenFunc: s.onOpen,
		StreamRequestFunc: s.onRequest, StreamClosedFunc: s.onClosed, StreamResponseFunc: s.onResponse,
		StreamDeltaRequestFunc: s.onDeltaRequest, DeltaStreamClosedFunc: s.onClosed, StreamDeltaResponseFunc: s.onDeltaResponse,
	})
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, xs)
	if s.Auth == nil {
		statusv3.RegisterClientStatusDiscoveryServiceServer(gs, &csds{s: s})
	}
	errc := make(chan error, 2)
	if s.StatusAddress != "" {
		slis, err := net.Listen("tcp", s.StatusAddress)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listening for the proxies' status on %s: %w", s.StatusAddress, err)
		}
		ss := grpc.NewServer()
		statusv3.RegisterClientStatusDiscoveryServiceServer(ss, &csds{s: s})
		defer ss.Stop()
		go func() { errc <- ss.Serve(slis) }()
		s.statusReady <- slis.Addr().String()
		s.Log.Info("Serving the proxies' status (CSDS)", "address", slis.Addr().String())
	}
	s.ready <- lis.Addr().String()
	s.Log.Info("Serving xDS", "address", lis.Addr().String(), "authenticated", s.Auth != nil)
	if s.Signer != nil {
		go s.renewLeaves(ctx)
	}
	go func() { errc <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
		gs.GracefulStop()
		return nil
	case err := <-errc:
		gs.Stop()
		return fmt.Errorf("serving xDS: %w", err)
	}
}
