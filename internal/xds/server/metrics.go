package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// nacks counts configurations that proxies rejected, by xDS type.
var nacks = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "weft_xds_nacks_total",
	Help: "Configurations that proxies rejected (NACKs), by xDS type URL.",
}, []string{"type_url"})

func init() {
	metrics.Registry.MustRegister(nacks)
}
