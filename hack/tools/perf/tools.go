//go:build tools

// Package tools pins benchstat, which compares benchmark runs
// (make bench-compare).
package tools

import _ "golang.org/x/perf/cmd/benchstat"
