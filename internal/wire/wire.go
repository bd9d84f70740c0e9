// Package wire is the one home of the names and numbers that the parts of
// weft on both ends of a wire must agree on: what the injector writes into
// a pod and its proxy's bootstrap, what the init container captures, what
// the xDS server and its authenticator expect of a stream, what the
// translator names, and what the CLI reads back. Change a value here and
// every side changes with it.
//
// It imports the standard library only, so that every package of weft may
// import it without a cycle.
package wire

import (
	"fmt"
	"strings"
)

// NodeID is the xDS node id of a pod's proxy: "<pod>.<namespace>". The
// injector builds it from the downward API; the server and the
// authenticator parse it back (namespace names hold no dots).
func NodeID(pod, namespace string) string { return pod + "." + namespace }

// ParseNodeID splits a node id made by NodeID at its last dot; ok is false
// when either part would be empty.
func ParseNodeID(id string) (pod, namespace string, ok bool) {
	i := strings.LastIndex(id, ".")
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	return id[:i], id[i+1:], true
}

// Node metadata: the proxy's bootstrap sets MetaFlavour and
// MetaCertDelivery; the server's client status (CSDS) adds the others for
// `weft status`.
const (
	// MetaFlavour says what the proxy is (a Flavour).
	MetaFlavour = "weft.flavour"
	// MetaIdentity is who the proxy is: the SPIFFE ID of the certificate
	// weft serves it, or else the ServiceAccount its stream proved.
	MetaIdentity = "weft.identity"
	// MetaCertExpiry is when the proxy's certificate expires (RFC 3339).
	MetaCertExpiry = "weft.certExpiry"
	// MetaCertDelivery is how the proxy gets its certificate (a
	// CertDelivery): in a bootstrap, the delivery the injector set the
	// pod up for, which the xDS server serves it by (a proxyless gRPC
	// proxy without pod certificates is sent no TLS); in the client
	// status, the delivery of the certificate weft found for it.
	MetaCertDelivery = "weft.certDelivery"
	// MetaSent (a struct: xDS type URL to version) is the version of each
	// type the proxy was last sent; the client status gives it, with the
	// resources themselves, to a request that names the proxy (weft
	// config).
	MetaSent = "weft.sent"
	// MetaAcknowledged (a struct: "<Kind>/<namespace>/<name>" to
	// metadata.generation) names the MeshServices, TrafficPolicies and
	// PeerAuthentications that the configuration the proxy last
	// acknowledged in full was made from, at the generation it was made
	// from (weft describe); given to a request that names the proxy.
	MetaAcknowledged = "weft.acknowledged"
)

// Flavour is the kind of proxy a pod runs.
type Flavour string

const (
	// FlavourEnvoy is an Envoy sidecar whose traffic weft init-redirect
	// captures.
	FlavourEnvoy Flavour = "envoy"
	// FlavourGRPC is a proxyless gRPC workload: grpc-go's own xDS client
	// and server, no sidecar.
	FlavourGRPC Flavour = "grpc"
)

// CertDelivery says how workloads get their certificates.
type CertDelivery string

const (
	// DeliverySDS means the controller serves certificates over SDS on the
	// authenticated xDS stream.
	DeliverySDS CertDelivery = "sds"
	// DeliveryPodCertificate means the kubelet writes them into a podCertificate
	// projected volume, signed by weft.
	DeliveryPodCertificate CertDelivery = "podCertificate"
)

// ParseCertDelivery reads a delivery as the injector writes it; ok is
// false for anything else (a proxy that says none, or one unknown here).
func ParseCertDelivery(s string) (CertDelivery, bool) {
	switch d := CertDelivery(s); d {
	case DeliverySDS, DeliveryPodCertificate:
		return d, true
	}
	return "", false
}

// Ports of the proxy in a pod's network namespace, the UID it runs as
// (whose traffic is never captured), and the control plane's xDS ports.
// Untyped: corev1, Envoy, nftables and flags each want their own integer.
const (
	// PortAdmin is Envoy's admin interface, on loopback only.
	PortAdmin = 15000
	// PortOutbound receives the pod's captured outbound TCP.
	PortOutbound = 15001
	// PortInbound receives the pod's captured inbound TCP.
	PortInbound = 15006
	// PortHealth serves the proxy's readiness and the app's rewritten
	// probes.
	PortHealth = 15021
	// PortStats serves the proxy's Prometheus metrics.
	PortStats = 15090
	// ProxyUID is the UID the sidecar runs as.
	ProxyUID = 1337
	// PortXDS is the controller's authenticated xDS server.
	PortXDS = 15012
	// PortXDSStatus is the controller's client status (CSDS) server, on
	// loopback by default; `weft status` reads it.
	PortXDSStatus = 15013
	// PortDrain is the controller's authenticated drain endpoint (see
	// DrainPath).
	PortDrain = 15014
)

// Draining a pod that goes away: its pre-stop asks the controller, at
// DrainPath on PortDrain over TLS, to answer once every proxy that can
// reach the pod has acknowledged configuration in which it takes no new
// requests. The caller proves its pod with the bearer token (TokenAudience)
// or a mesh client certificate; DrainNodeHeader names the pod by its node
// id ("<pod>.<namespace>"), which a certificate alone does not. A sidecar
// serves the same path on PortHealth, where the kubelet's pre-stop calls
// it, and forwards it with its own certificate. A proxyless workload finds
// the endpoint's URL in the environment variable EnvDrainURL.
const (
	DrainPath       = "/drain"
	DrainNodeHeader = "X-Weft-Node"
	// DrainTimeoutParam, a Go duration in the query, bounds the wait
	// further than the pod's grace period does.
	DrainTimeoutParam = "timeout"
	EnvDrainURL       = "WEFT_DRAIN_URL"
)

// The replicas of the controller tell each other which terminating pods
// their proxies are clear of (internal/replicas): each keeps a Lease named
// DrainLeasePrefix plus its replica name in the controller's namespace,
// labelled LabelDrainReplica, renewed as a heartbeat, whose annotation
// AnnotationDrainClear lists those pods' UIDs, comma-separated. The
// chart's Deployment gives each replica its pod's name and UID in
// EnvPodName and EnvPodUID: the name names the replica, and the pod owns
// the Lease, which goes with it.
const (
	DrainLeasePrefix     = "weft-drain."
	LabelDrainReplica    = "mesh.weft.dev/drain-replica"
	AnnotationDrainClear = "mesh.weft.dev/drain-clear"
	EnvPodName           = "WEFT_POD_NAME"
	EnvPodUID            = "WEFT_POD_UID"
)

// Stream authentication: a proxy sends its projected ServiceAccount token,
// issued for TokenAudience, as "authorization: Bearer <token>".
const (
	TokenAudience = "weft"
	BearerPrefix  = "Bearer "
)

// Names of a sidecar's SDS secrets, which weft serves on its stream: its
// own certificate and key, and the roots it trusts. The translator's TLS
// contexts and the bootstrap's drain cluster name them.
const (
	SDSCertificate = "default"
	SDSRoots       = "ROOTCA"
)

// Proxyless gRPC: the bootstrap the injector writes and the resources the
// translator makes refer to each other by these names.
const (
	// CertProviderInstance is the bootstrap's certificate provider (a file
	// watcher on the pod certificate and the mesh roots) that TLS contexts
	// name.
	CertProviderInstance = "weft"
	// ServerListenerPrefix and the server's "ip:port" make the name of the
	// Listener a grpc-go xDS server asks for (its bootstrap's
	// server_listener_resource_name_template is the prefix and "%s").
	ServerListenerPrefix = "grpc/server?xds.resource.listening_address="
)

// ServerListenerName is the Listener a grpc-go xDS server listening on
// hostPort asks for.
func ServerListenerName(hostPort string) string { return ServerListenerPrefix + hostPort }

// Where the injector mounts what a pod's proxy reads, and the file names
// within.
const (
	TokenDir      = "/var/run/secrets/weft/token"
	TokenFileName = "token"
	TokenFile     = TokenDir + "/" + TokenFileName

	RootsDir      = "/var/run/secrets/weft/ca"
	RootsFileName = "root-cert.pem"
	RootsFile     = RootsDir + "/" + RootsFileName

	CertsDir          = "/var/run/secrets/weft/certs"
	CertChainFileName = "cert-chain.pem"
	KeyFileName       = "key.pem"
	CertChainFile     = CertsDir + "/" + CertChainFileName
	KeyFile           = CertsDir + "/" + KeyFileName
)

// Objects in the cluster that the controllers write and the injector
// refers to.
const (
	// BundleConfigMap holds the mesh root bundle, under BundleKey, in every
	// meshed namespace; the injector mounts it at RootsDir.
	BundleConfigMap = "weft-root-ca"
	BundleKey       = RootsFileName
	// PodCertificateSigner is the signer of weft's PodCertificateRequests.
	PodCertificateSigner = "weft.dev/workload"
	// LabelInject on a namespace (InjectEnabled) opts its pods in; on a
	// pod (InjectDisabled) opts that pod out.
	LabelInject    = "mesh.weft.dev/inject"
	InjectEnabled  = "enabled"
	InjectDisabled = "false"
	// LabelDefaultInbound on a namespace sets who may call its
	// MeshServices that have no allow rules, in place of the mesh-wide
	// --default-inbound: a DefaultInbound.
	LabelDefaultInbound = "mesh.weft.dev/default-inbound"
)

// DefaultInbound says who may call a MeshService that has no allow rules.
type DefaultInbound string

// The default inbound policies.
const (
	// DefaultInboundAll lets every caller in (no authorization).
	DefaultInboundAll DefaultInbound = "all"
	// DefaultInboundNamespace lets in only the mesh identities of the
	// service's own namespace.
	DefaultInboundNamespace DefaultInbound = "namespace"
	// DefaultInboundDeny lets nobody in: only allow rules grant access.
	DefaultInboundDeny DefaultInbound = "deny"
)

// ParseDefaultInbound reads a default inbound policy ("" is all).
func ParseDefaultInbound(s string) (DefaultInbound, error) {
	switch d := DefaultInbound(s); d {
	case "":
		return DefaultInboundAll, nil
	case DefaultInboundAll, DefaultInboundNamespace, DefaultInboundDeny:
		return d, nil
	}
	return "", fmt.Errorf("%q is not a default inbound policy: want all, namespace or deny", s)
}

// Defaults of the mesh.
const (
	DefaultTrustDomain   = "cluster.local"
	DefaultMeshNamespace = "weft-system"
)

// The reasons of the Events weft records, for alerts and tools that
// filter on them (docs/operations.md).
const (
	// EventConfigurationRejected (Warning, on a pod): its proxy rejected
	// the configuration weft sent (a NACK), with the type, version and
	// the proxy's words.
	EventConfigurationRejected = "ConfigurationRejected"
	// EventCertificateRefused (Warning, on a pod): weft denied its pod
	// certificate request, or failed to sign it, with the reason.
	EventCertificateRefused = "CertificateRefused"
	// EventCATaken (Normal, on the CA's Secret): the controller took a new
	// signing CA (made, rotated or renewed).
	EventCATaken = "CATaken"
	// EventCertificateWaiting (Warning, on a pod): its sidecar waits for a
	// certificate from the issuer weft asks (--ca=cert-manager), and is
	// sent nothing of its own meanwhile; the message says why.
	EventCertificateWaiting = "CertificateWaiting"
	// EventTrustExpiring (Warning, on the MeshTrust mesh): a trust anchor
	// or the signing CA expires within the warning window, or has expired.
	EventTrustExpiring = "TrustExpiring"
	// EventInjectionSkipped (Warning, on the controller of a pod: its
	// ReplicaSet, Job, StatefulSet or DaemonSet; on the pod's name when it
	// has none): the injection webhook left a pod out of the mesh, and why.
	EventInjectionSkipped = "InjectionSkipped"
	// EventCARotated (Normal, on the MeshTrust mesh): the mesh's trust
	// anchors or its signing CA changed (weft ca rotate or retire, a
	// renewed external CA, a new root in an issuer's trust bundle).
	EventCARotated = "CARotated"
	// EventDrainTimedOut (Warning, on a pod): its pre-stop's wait for every
	// proxy that can reach it to stop sending it requests ended before they
	// all had; the message names how many still could.
	EventDrainTimedOut = "DrainTimedOut"
)
