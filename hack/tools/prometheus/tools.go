//go:build tools

// Package tools pins the Prometheus server and promtool that weft's
// metrics test runs.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
