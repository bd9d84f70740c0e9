// Package inject decides whether a pod joins the mesh and, if it does,
// adds what it needs: stock Envoy as a native sidecar with the
// traffic-capture init container, or, for proxyless gRPC pods, a gRPC xDS
// bootstrap. The mutation is a pure function of the pod and the mesh
// config; the webhook and the CLI preview both call it.
package inject

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/weftmesh/weft/internal/wire"
)

// Annotations users set on a pod (the label that opts namespaces and pods
// in or out is wire.LabelInject).
const (
	// AnnotationProxy picks the flavour: "envoy" (default) or "grpc"
	// (proxyless: a gRPC xDS bootstrap, no sidecar, no capture).
	AnnotationProxy = "mesh.weft.dev/proxy"
	// AnnotationExcludeInboundPorts lists inbound ports not captured.
	AnnotationExcludeInboundPorts = "mesh.weft.dev/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts lists outbound ports not captured.
	AnnotationExcludeOutboundPorts = "mesh.weft.dev/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs lists outbound CIDRs not captured.
	AnnotationExcludeOutboundCIDRs = "mesh.weft.dev/exclude-outbound-cidrs"
	// AnnotationProxyImage overrides the Envoy image for one pod.
	AnnotationProxyImage = "mesh.weft.dev/proxy-image"
	// Resource overrides for the proxy container.
	AnnotationProxyCPURequest    = "mesh.weft.dev/proxy-cpu-request"
	AnnotationProxyMemoryRequest = "mesh.weft.dev/proxy-memory-request"
	AnnotationProxyCPULimit      = "mesh.weft.dev/proxy-cpu-limit"
	AnnotationProxyMemoryLimit   = "mesh.weft.dev/proxy-memory-limit"
	// AnnotationInjected records what was injected ("envoy" or "grpc"); it
	// makes a second pass a no-op.
	AnnotationInjected = "mesh.weft.dev/injected"
)

// Names of what the injector adds.
const (
	ProxyContainer = "weft-proxy"
	InitContainer  = "weft-init"
	VolumeToken    = "weft-token"
	VolumeRootCA   = "weft-root-ca"
	VolumeCerts    = "weft-certs"
	VolumeProxy    = "weft-proxy"
)

// Config is the part of the mesh config the injector uses.
type Config struct {
	// MeshNamespace is the control plane's namespace; never injected.
	MeshNamespace string
	// TrustDomain of SPIFFE identities.
	TrustDomain string
	// ProxyImage is the stock Envoy image, pinned.
	ProxyImage string
	// InitImage is weft's image, which runs "weft init-redirect".
	InitImage string
	// ProxyUID is the UID Envoy runs as; its traffic is not captured.
	ProxyUID int64
	// XDSHost and XDSPort reach the controller's xDS server over TLS.
	XDSHost string
	XDSPort int32
	// DrainPort reaches the controller's drain endpoint at XDSHost
	// (wire.DrainPath): a sidecar's pre-stop waits there, and proxyless
	// workloads are told its URL (wire.EnvDrainURL). 0 injects no wait.
	DrainPort int32
	// TokenExpirySeconds is the lifetime of the projected ServiceAccount
	// token (audience wire.TokenAudience) sent as call credentials.
	TokenExpirySeconds int64
	// CertDelivery, and the signer name for pod certificates.
	CertDelivery         wire.CertDelivery
	PodCertificateSigner string
	// ProxyResources are the proxy container's requests and limits.
	ProxyResources corev1.ResourceRequirements
	// ProxyLogLevel is Envoy's --log-level.
	ProxyLogLevel string
	// ProxyConcurrency is Envoy's --concurrency (worker threads).
	ProxyConcurrency int32
	// TracingEndpoint and MetricsEndpoint are the OpenTelemetry collectors
	// (OTLP/gRPC, host:port) that proxyless gRPC workloads send traces and
	// metrics to, each empty for none; TracingSampling is the percentage of
	// the traces they start that are sampled (0-100). They are the
	// controller's --tracing-endpoint, --metrics-endpoint and
	// --tracing-sampling.
	TracingEndpoint string
	MetricsEndpoint string
	TracingSampling float64
}

// DefaultConfig is what weft injects unless the mesh config says
// otherwise.
func DefaultConfig() Config {
	return Config{
		MeshNamespace:        wire.DefaultMeshNamespace,
		TrustDomain:          wire.DefaultTrustDomain,
		ProxyImage:           "docker.io/envoyproxy/envoy:v1.36.2",
		InitImage:            "ghcr.io/weftmesh/weft:latest",
		ProxyUID:             wire.ProxyUID,
		XDSHost:              "weft-controller." + wire.DefaultMeshNamespace + ".svc",
		XDSPort:              wire.PortXDS,
		DrainPort:            wire.PortDrain,
		TokenExpirySeconds:   3600,
		CertDelivery:         wire.DeliverySDS,
		PodCertificateSigner: wire.PodCertificateSigner,
		ProxyResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		},
		ProxyLogLevel:    "warning",
		ProxyConcurrency: 2,
		TracingSampling:  1,
	}
}

// Validate checks the config once, at start-up.
func (c Config) Validate() error {
	switch {
	case c.MeshNamespace == "" || c.TrustDomain == "" || c.ProxyImage == "" || c.InitImage == "" || c.XDSHost == "":
		return fmt.Errorf("mesh config: meshNamespace, trustDomain, proxyImage, initImage and xdsHost must be set")
	case c.ProxyUID <= 0:
		return fmt.Errorf("mesh config: proxyUID must be positive, got %d", c.ProxyUID)
	case c.XDSPort < 1 || c.XDSPort > 65535:
		return fmt.Errorf("mesh config: xdsPort must be a port (1-65535), got %d", c.XDSPort)
	case c.DrainPort < 0 || c.DrainPort > 65535:
		return fmt.Errorf("mesh config: drainPort must be a port (1-65535), or 0 for no drain wait, got %d", c.DrainPort)
	case c.TokenExpirySeconds < 600:
		return fmt.Errorf("mesh config: tokenExpirySeconds must be at least 600 (the API server's minimum), got %d", c.TokenExpirySeconds)
	case c.CertDelivery != wire.DeliverySDS && c.CertDelivery != wire.DeliveryPodCertificate:
		return fmt.Errorf("mesh config: certDelivery must be %q or %q, got %q", wire.DeliverySDS, wire.DeliveryPodCertificate, c.CertDelivery)
	}
	return c.ValidateTelemetry()
}

// ValidateTelemetry checks the collectors and the sampling, naming the
// controller's flag of the one that is wrong.
func (c Config) ValidateTelemetry() error {
	if c.TracingSampling < 0 || c.TracingSampling > 100 {
		return fmt.Errorf("--tracing-sampling %v: want a percentage, 0-100", c.TracingSampling)
	}
	if err := checkEndpoint("--tracing-endpoint", c.TracingEndpoint); err != nil {
		return err
	}
	return checkEndpoint("--metrics-endpoint", c.MetricsEndpoint)
}

// checkEndpoint checks that a collector's address, when set, is host:port.
func checkEndpoint(flag, v string) error {
	if v == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" || strings.ContainsAny(host, "/,= ") {
		return fmt.Errorf("%s %q: want host:port", flag, v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%s %q: bad port", flag, v)
	}
	return nil
}
