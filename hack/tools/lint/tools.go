//go:build tools

// Package tools pins the linters make lint runs: golangci-lint (govet,
// staticcheck, errcheck, revive and the rest .golangci.yml enables) and
// logcheck, which checks structured logging calls (constant messages,
// key/value pairs).
package tools

import (
	_ "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
	_ "sigs.k8s.io/logtools/logcheck"
)
