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
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"sigs.k8s.io/controller-runtime/pkg/client"

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
	// Leaves, set instead of Signer, is where the sidecars' leaves come
	// from when weft holds no CA (certmanager.Leaves: an issuer signs
	// them). A sidecar waits, sent nothing of its own, until its leaf
	// has come.
	Leaves sds.Source
	// Delivery is how this controller has workloads get their
	// certificates (--cert-delivery). It applies to the proxies whose node
	// does not say how theirs were delivered (wire.MetaCertDelivery,
	// which the injector writes; a pod injected by an older weft lacks
	// it); every other proxy is served by its own (translate.Proxy.
	// Delivery): a proxyless gRPC workload uses mTLS where its
	// PeerAuthentication says STRICT only with pod certificates, which
	// grpc-go reads as files. Empty: as SDS.
	Delivery wire.CertDelivery
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
	// DrainAddress, when set, serves the drain endpoint (wire.DrainPath,
	// see drain.go) there, with TLS and Auth as the xDS server has them.
	// Pods (the manager's cache) is where it reads the pods it is asked
	// about.
	DrainAddress string
	Pods         client.Reader
	// Peers, when set with DrainAddress, is the other replicas' word on
	// terminating pods (drain_peers.go): a drain waits for every live
	// replica's, and this replica's own is handed to it. Pods must then
	// be a cache indexed by IndexTerminatingPods.
	Peers Peers
	// Events, when set, records a proxy's rejection of its configuration
	// (a NACK) as a Warning Event on its pod, where kubectl describe
	// shows it.
	Events events.EventRecorder
}

// Validate says what is wrong with a combination of options.
func (o Options) Validate() error {
	var errs []error
	if o.Address == "" {
		errs = append(errs, errors.New("Address: the xDS server needs an address to listen on"))
	}
	if o.Signer != nil && o.Leaves != nil {
		errs = append(errs, errors.New("Signer and Leaves: the sidecars' leaves come from one of them, not both"))
	}
	if o.Signer != nil || o.Leaves != nil {
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
	if o.EnvoyCerts == translate.EnvoyCertsSDS && o.Signer == nil && o.Leaves == nil {
		errs = append(errs, errors.New("EnvoyCerts: SDS certificates need a Signer, or every sidecar's TLS would name secrets that never come"))
	}
	if (o.PodCertificates == nil) != (o.PodCertificateSigner == "") {
		errs = append(errs, errors.New("PodCertificates and PodCertificateSigner: set both or neither"))
	}
	if o.DrainAddress != "" && o.Pods == nil {
		errs = append(errs, errors.New("Pods: the drain endpoint reads the pods it is asked about; set Pods with DrainAddress"))
	}
	if o.Peers != nil && o.DrainAddress == "" {
		errs = append(errs, errors.New("Peers: the replicas' word serves the drain endpoint; set DrainAddress with Peers"))
	}
	if o.Auth != nil && o.TLS == nil {
		errs = append(errs, errors.New("TLS: an authenticating server must serve TLS, or tokens would cross the network in plain text"))
	}
	return errors.Join(errs...)
}

// Server is the ADS server. It is a manager runnable that needs no leader
// election: every replica serves proxies. Its concerns each keep their own
// state under their own lock: the streams and what they proved
// (streamTable), translation and what each proxy is sent (scheduler), the
// sidecars' certificates (sds.Issuer) and what each proxy acknowledged
// (acks.Tracker). The server itself holds no lock.
type Server struct {
	Options

	cache   *cache.Cache
	acks    *acks.Tracker
	sds     *sds.Issuer
	sched   *scheduler
	streams *streamTable

	ready, statusReady, drainReady chan string
	// wake wakes the drain waits (drain.go).
	wake drainWake
}

// New returns a server with an empty model, or what is wrong with the
// options.
func New(o Options) (*Server, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("configuring the xDS server: %w", err)
	}
	c := cache.New()
	s := &Server{Options: o, cache: c, acks: acks.New(c.Versions, o.Log), streams: newStreamTable(),
		ready: make(chan string, 1), statusReady: make(chan string, 1), drainReady: make(chan string, 1)}
	source := o.Leaves
	if o.Signer != nil {
		source = sds.CASource{Root: o.Signer, TTL: o.LeafTTL}
	}
	if source != nil {
		s.sds = sds.New(source)
	}
	topts := translate.Options{EnvoyCerts: o.EnvoyCerts, TrustDomain: o.TrustDomain, Observe: o.Observe}
	s.sched = newScheduler(o.Log, topts, o.EnvoyCerts, c, s.acks, s.sds)
	if o.Events != nil {
		s.sched.waiting = s.announceWaiting
	}
	if n, ok := source.(sds.Notifier); ok {
		// Proxies waiting for a leaf are served as soon as it comes.
		n.OnLeaves(func() { s.sched.renew(time.Now()) })
	}
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

// reportWaitingEvery is how often the age of the stalest proxy
// (metrics.Unacknowledged) is looked at.
const reportWaitingEvery = 5 * time.Second

// stopGrace is how long a stopping server lets responses in flight finish
// before it closes the proxies' streams.
const stopGrace = 2 * time.Second

// renewLeaves replaces sidecars' certificates at half-life, and keeps
// metrics.LeafExpiry.
func (s *Server) renewLeaves(ctx context.Context) {
	t := time.NewTicker(sds.RenewEvery(s.LeafTTL))
	defer t.Stop()
	defer metrics.LeafExpiry.DeleteLabelValues(metrics.DeliverySDS)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sched.renew(now)
		}
		if soonest, ok := s.sds.Soonest(); ok {
			metrics.LeafExpiry.WithLabelValues(metrics.DeliverySDS).Set(float64(soonest.Unix()))
		} else {
			metrics.LeafExpiry.DeleteLabelValues(metrics.DeliverySDS)
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
	s.sched.onModel(m)
	s.wake.poke()
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
	id, err := s.register(stream, node)
	if err != nil {
		return err
	}
	rejected := s.acks.Replied(id, typeURL, nonce, nack)
	s.wake.poke()
	if rejected == "" {
		return nil
	}
	for _, ms := range s.sched.servicesNamed(nack) {
		metrics.ServiceNACKs.WithLabelValues(ms).Inc()
	}
	if s.Events != nil {
		s.announceRejected(id, rejected)
	}
	return nil
}

// announceRejected records a NACK on the proxy's pod. A proxy rejects a
// version once (weft does not send it again until the configuration
// changes), and the recorder folds repeats of one message into one Event.
func (s *Server) announceRejected(id, rejected string) {
	p, who, ok := s.sched.podOf(id)
	if !ok || p.Pod == "" {
		return
	}
	ns, name, _ := strings.Cut(p.Pod, "/")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if who.Namespace == ns && who.Pod == name {
		pod.UID = types.UID(who.PodUID)
	}
	s.Events.Eventf(pod, nil, corev1.EventTypeWarning, wire.EventConfigurationRejected, "Configure", "%s", rejected)
}

// announceWaiting records on a proxy's pod that it waits for its
// certificate, and why (an issuer that is slow, down or refusing).
func (s *Server) announceWaiting(p translate.Proxy, who auth.Identity, err error) {
	if p.Pod == "" {
		return
	}
	ns, name, _ := strings.Cut(p.Pod, "/")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if who.Namespace == ns && who.Pod == name {
		pod.UID = types.UID(who.PodUID)
	}
	s.Events.Eventf(pod, nil, corev1.EventTypeWarning, wire.EventCertificateWaiting, "Certify", "%s", err.Error())
}

// register binds a stream to the proxy its node names, the first time it
// names one: with Auth, only to the node id of the pod it proved (checked
// outside every lock: it may read the pod). It returns the proxy's id.
func (s *Server) register(stream int64, node *corev3.Node) (string, error) {
	id := node.GetId()
	if bound, ok := s.streams.proxyOf(stream); ok && (id == "" || id == bound) {
		return bound, nil
	}
	if id == "" {
		return "", errors.New("the first request of a stream names no node")
	}
	st, _ := s.streams.get(stream)
	who, proved := st.who, st.proved
	if s.Auth != nil {
		if !proved {
			return "", status.Error(codes.Unauthenticated, "the stream proved no identity")
		}
		bound, err := s.Auth.BindNode(st.ctx, who, id)
		if err != nil {
			s.Log.Info("A proxy used a node id that is not its own", "proxy", id, "namespace", who.Namespace,
				"serviceAccount", who.ServiceAccount, "pod", who.Pod, "reason", err.Error())
			return "", err
		}
		who = bound
	}
	first, err := s.streams.bind(stream, id, who, proved)
	if err != nil {
		return "", err
	}
	if first {
		s.sched.connect(ProxyFor(node, s.Delivery), who, proved)
	}
	return id, nil
}

// ProxyFor describes the proxy behind a node: its flavour from the node
// metadata (wire.MetaFlavour; grpc when absent), the delivery of its
// certificates from the node metadata too (wire.MetaCertDelivery;
// otherwise the controller's, delivery), and its pod from the node id
// (wire.NodeID).
func ProxyFor(node *corev3.Node, delivery wire.CertDelivery) translate.Proxy {
	fields := node.GetMetadata().GetFields()
	p := translate.Proxy{ID: node.GetId(), Flavour: wire.FlavourGRPC, Delivery: delivery}
	if fields[wire.MetaFlavour].GetStringValue() == string(wire.FlavourEnvoy) {
		p.Flavour = wire.FlavourEnvoy
	}
	if d, ok := wire.ParseCertDelivery(fields[wire.MetaCertDelivery].GetStringValue()); ok {
		p.Delivery = d
	}
	if pod, ns, ok := wire.ParseNodeID(p.ID); ok {
		p.Namespace = ns
		p.Pod = mesh.Key(ns, pod)
	}
	return p
}

// onOpen records each stream, and what it proved when streams
// authenticate.
func (s *Server) onOpen(ctx context.Context, stream int64, _ string) error {
	if s.Auth == nil {
		s.streams.opened(ctx, stream, auth.Identity{}, false)
		return nil
	}
	who, ok := auth.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "the stream proved no identity")
	}
	s.streams.opened(ctx, stream, who, true)
	return nil
}

// onClosed forgets a stream, and its proxy with its last stream.
func (s *Server) onClosed(stream int64, _ *corev3.Node) {
	if id, ok := s.streams.closed(stream); ok {
		s.sched.disconnect(id)
		s.wake.poke()
	}
}

// Proxies lists the connected proxies' ids.
func (s *Server) Proxies() []string {
	views := s.sched.snapshot()
	out := make([]string, len(views))
	for i, v := range views {
		out[i] = v.proxy.ID
	}
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
	errc := make(chan error, 3)
	if s.DrainAddress != "" {
		stop, err := s.startDrain(errc)
		if err != nil {
			lis.Close()
			return err
		}
		defer stop()
	}
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
	if s.sds != nil {
		go s.renewLeaves(ctx)
	}
	go s.acks.ReportWaiting(ctx, reportWaitingEvery)
	if s.Peers != nil {
		go s.speak(ctx)
	}
	go func() { errc <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
		// xDS streams never end by themselves: a graceful stop would wait
		// for every proxy to hang up. Responses in flight get stopGrace;
		// then the streams close and the proxies reconnect elsewhere.
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(stopGrace):
			gs.Stop()
			<-stopped
		}
		return nil
	case err := <-errc:
		gs.Stop()
		return fmt.Errorf("serving xDS: %w", err)
	}
}
