//go:build tools

// Package tools pins the etcd server that backs weft's test API server.
package tools

import _ "go.etcd.io/etcd/server/v3"
