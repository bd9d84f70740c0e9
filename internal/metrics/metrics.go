// Package metrics names every metric weft exports, in one list that
// docs/operations.md (and the alerts and dashboards built on it) follow.
// They are registered in controller-runtime's registry, which the
// controller serves on its authenticated metrics endpoint
// (--metrics-bind-address); the stages set them where their events
// happen. Every label has a bounded set of values: an xDS type, a
// flavour, a delivery, a reason from a fixed list, an outcome, or (for
// the NACKs attributed to a service and for the trust anchors) the
// objects of the mesh itself.
//
// Reconcile errors are controller-runtime's own
// controller_runtime_reconcile_errors_total{controller}, served on the
// same endpoint; weft adds none.
//
// This package imports no stage of the pipeline: every stage may use it.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/weftmesh/weft/internal/wire"
)

// Label values that several packages share.
const (
	// Deliveries of workload certificates (wire.CertDelivery's values).
	DeliverySDS            = "sds"
	DeliveryPodCertificate = "podCertificate"

	// Parts of translation (Translation's label).
	PartShared = "shared"
	PartProxy  = "proxy"

	// Outcomes of the injection webhook (Injections' label).
	OutcomeInjected = "injected"
	OutcomeSkipped  = "skipped"
	OutcomeRefused  = "refused"
	OutcomeFailed   = "failed"

	// Outcomes of a CertificateRequest to cert-manager (IssuerRequests'
	// label).
	RequestIssued  = "issued"
	RequestRefused = "refused"
	RequestFailed  = "failed"

	// ReasonSignerFailed: weft could not sign or obtain a sidecar's leaf
	// (the CA not loaded, the issuer failing or refusing).
	ReasonSignerFailed = "SignerFailed"

	// Outcomes of a pod's drain (Drains' label): every proxy that could
	// reach it acknowledged configuration without it; the wait ended
	// first; the pod was not terminating (a container restarted in place).
	DrainDrained        = "drained"
	DrainTimedOut       = "timed_out"
	DrainNotTerminating = "not_terminating"
)

// The pipeline: from a change of what the mesh is built from to the
// proxies' acknowledgements.
var (
	// Propagation is the time from the first change of a burst (the
	// informer event that started it) to the moment every proxy whose
	// configuration the resulting model changed has acknowledged it. A
	// model that changes no proxy's configuration is not observed; a
	// proxy that leaves first is not waited for.
	Propagation = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "weft_xds_propagation_duration_seconds",
		Help:    "Time from a change to the objects the mesh is built from until every connected proxy whose configuration it changed acknowledged it.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	})
	// Translation is the time translation takes: once per model for what
	// proxies share (part shared), and per proxy for its sets and own
	// resources on every push (part proxy).
	Translation = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weft_xds_translation_duration_seconds",
		Help:    "Time spent translating the mesh model into xDS resources, by part: shared (once per model) or proxy (one proxy's push).",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"part"})
	// Pushes counts the responses sent to proxies, by xDS type.
	Pushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_xds_pushes_total",
		Help: "xDS responses sent to proxies (state of the world and delta), by type URL.",
	}, []string{"type_url"})
	// PushSize is the size of the resources in each response, by type.
	PushSize = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weft_xds_push_size_bytes",
		Help:    "Bytes of encoded resources in each xDS response sent to a proxy, by type URL.",
		Buckets: prometheus.ExponentialBuckets(256, 4, 10),
	}, []string{"type_url"})
)

// The xDS server.
var (
	// Proxies is the number of connected proxies, by flavour.
	Proxies = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_xds_proxies",
		Help: "Proxies connected to this replica's xDS server, by flavour (envoy or grpc).",
	}, []string{"flavour"})
	// Unacknowledged is, by flavour, the earliest time since which a
	// connected proxy has held configuration it was sent and has not
	// acknowledged: the age of the stalest proxy. The xDS server looks at
	// its proxies every few seconds (acks.Tracker.ReportWaiting).
	Unacknowledged = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_xds_unacknowledged_since_timestamp_seconds",
		Help: "The earliest time (Unix) since which a connected proxy, by flavour, has not acknowledged the configuration it was sent (no ACK of the current version of every type it asked for, or a NACK); absent while every proxy holds its configuration.",
	}, []string{"flavour"})
	// NACKs counts configurations that proxies rejected.
	NACKs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_xds_nacks_total",
		Help: "Configurations that proxies rejected (NACKs), by xDS type URL and the proxy's flavour.",
	}, []string{"type_url", "flavour"})
	// ServiceNACKs counts NACKs by the MeshService ("<namespace>/<name>")
	// whose resources the proxy's error names (a listener, route, cluster
	// or endpoints of its host). A NACK that names none is counted only in
	// NACKs.
	ServiceNACKs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_xds_service_nacks_total",
		Help: "NACKs whose error names a resource of a MeshService, by that MeshService (namespace/name).",
	}, []string{"meshservice"})
)

// Identity.
var (
	// CertificatesIssued counts workload certificates weft gave out: a
	// new leaf served to a sidecar over SDS, or a PodCertificateRequest
	// signed.
	CertificatesIssued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_certificates_issued_total",
		Help: "Workload certificates weft gave out, by delivery: sds (a new leaf served to a sidecar) or podCertificate (a PodCertificateRequest signed).",
	}, []string{"delivery"})
	// CertificatesRefused counts certificates weft refused or failed to
	// give, by delivery and reason: a PodCertificateRequest denied (the
	// reason on its Denied condition), or a sidecar's leaf that could not
	// be had (SignerFailed).
	CertificatesRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_certificates_refused_total",
		Help: "Workload certificates weft refused or could not give, by delivery and reason (PodNotFound, PodMismatch, UnsupportedKeyType, SignerFailed).",
	}, []string{"delivery", "reason"})
	// LeafExpiry is the soonest expiry among the leaves the xDS server
	// serves to sidecars; absent while it serves none.
	LeafExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_certificates_soonest_expiry_timestamp_seconds",
		Help: "The soonest expiry (Unix time) among the workload certificates this replica serves, by delivery; absent while it serves none.",
	}, []string{"delivery"})
	// TrustExpiry is each trusted certificate's expiry: role anchor (in
	// the bundle every workload trusts) or signing (the CA weft signs
	// with). The leader sets it (controllers.TrustReporter).
	TrustExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "weft_trust_certificate_expiry_timestamp_seconds",
		Help: "When each certificate of the mesh's trust expires (Unix time): role anchor (in the bundle every workload trusts) or signing (the CA weft signs with).",
	}, []string{"role", "subject", "serial"})
	// IssuerRequests counts the CertificateRequests weft made with
	// --ca=cert-manager, by outcome.
	IssuerRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_certificate_requests_total",
		Help: "CertificateRequests weft made (--ca=cert-manager: workload and serving certificates), by outcome: issued, refused (the answer failed weft's checks) or failed (denied, failed, or no answer).",
	}, []string{"outcome"})
	// IdentitiesWaiting counts identities waiting for an issuer's leaf.
	IdentitiesWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_certificate_identities_waiting",
		Help: "Identities whose sidecars wait for a first certificate, or hold one past half-life that the issuer has not renewed.",
	})
)

// The injection webhook.
var (
	// InjectionDuration is the time the webhook takes to answer, by
	// outcome.
	InjectionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weft_injection_duration_seconds",
		Help:    "Time the sidecar-injection webhook took to answer a pod, by outcome (injected, skipped, refused, failed).",
		Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5},
	}, []string{"outcome"})
	// Injections counts the webhook's answers by outcome and, for a skip
	// or a refusal, its reason (inject.Reason*); empty otherwise.
	Injections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_injections_total",
		Help: "Pods the sidecar-injection webhook answered, by outcome (injected, skipped, refused, failed) and, for a skip or a refusal, its reason.",
	}, []string{"outcome", "reason"})
)

// Leader election.
var (
	// Leader is 1 while this replica runs the status writers: while it
	// holds the lease with --leader-elect, always without.
	Leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_leader",
		Help: "Whether this replica runs the status writers (1: it holds the leader lease, or runs without leader election) or not (0).",
	})
	// LeaderTerms counts the terms this replica began.
	LeaderTerms = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "weft_leader_terms_total",
		Help: "Terms of leadership this replica began.",
	})
)

// Draining pods that go away.
var (
	// Drains is how long the drain endpoint made a terminating pod's
	// pre-stop wait, by outcome. A timed_out drain means a pod stopped
	// while some proxy could still send it new requests.
	Drains = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "weft_drain_duration_seconds",
		Help:    "Time a pod's pre-stop waited for every proxy that could reach it, on every live replica, to acknowledge configuration in which it takes no new requests, by outcome (drained, timed_out, not_terminating).",
		Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"outcome"})
)

// All lists every metric above, in the order docs/operations.md gives.
var All = []prometheus.Collector{
	Propagation, Translation, Pushes, PushSize,
	Proxies, Unacknowledged, NACKs, ServiceNACKs,
	CertificatesIssued, CertificatesRefused, LeafExpiry, TrustExpiry, IssuerRequests, IdentitiesWaiting,
	InjectionDuration, Injections,
	Leader, LeaderTerms,
	Drains,
}

// The series of fixed label values, made once: they are observed on hot
// paths (every push), and exist from the start, at zero, for dashboards
// and alerts.
var (
	TranslationShared = Translation.WithLabelValues(PartShared)
	TranslationProxy  = Translation.WithLabelValues(PartProxy)
)

func init() {
	metrics.Registry.MustRegister(All...)
	for _, flavour := range []wire.Flavour{wire.FlavourEnvoy, wire.FlavourGRPC} {
		Proxies.WithLabelValues(string(flavour))
	}
	for _, outcome := range []string{RequestIssued, RequestRefused, RequestFailed} {
		IssuerRequests.WithLabelValues(outcome)
	}
	for _, outcome := range []string{DrainDrained, DrainTimedOut, DrainNotTerminating} {
		Drains.WithLabelValues(outcome)
	}
}

// Since returns the seconds from start to now, for a histogram.
func Since(start time.Time) float64 { return time.Since(start).Seconds() }
