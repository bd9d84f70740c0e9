package certmanager

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The metrics of --ca=cert-manager, on the controller's metrics endpoint.
var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_certificate_requests_total",
		Help: "CertificateRequests weft made (--ca=cert-manager: workload and serving certificates), by outcome: issued, refused (the answer failed weft's checks) or failed (denied, failed, or no answer).",
	}, []string{"outcome"})
	waiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_certificate_identities_waiting",
		Help: "Identities whose sidecars wait for a first certificate, or hold one past half-life that the issuer has not renewed.",
	})
)

func init() {
	metrics.Registry.MustRegister(requests, waiting)
}
