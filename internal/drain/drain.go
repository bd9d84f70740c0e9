// Package drain is the client of weft's drain endpoint (wire.DrainPath):
// what a proxyless gRPC workload calls when it is told to stop (SIGTERM,
// after the kubelet deleted its pod), before it stops taking calls. It
// uses only the standard library and what the injector gives the pod: the
// endpoint's URL (wire.EnvDrainURL), the mesh roots and the projected
// token, so that its code is what any application writes in its own
// language (docs/injection.md).
package drain

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/weftmesh/weft/internal/wire"
)

// Request says where to ask and as whom. Empty fields take what the
// injector gives a proxyless pod.
type Request struct {
	// URL is the drain endpoint ($WEFT_DRAIN_URL).
	URL string
	// RootsFile holds the mesh roots the endpoint's certificate chains to
	// (wire.RootsFile); TokenFile the pod's projected token
	// (wire.TokenFile). Neither is read for a plain http URL (a controller
	// with --xds-auth=none, on loopback).
	RootsFile, TokenFile string
	// Node names the pod ("<pod>.<namespace>"); the token names it
	// already.
	Node string
	// ServerName is the name the controller's certificate carries; the
	// URL's host when empty.
	ServerName string
}

// Answer is what the endpoint said.
type Answer struct {
	// Outcome is "drained", "timed_out" or "not_terminating".
	Outcome string  `json:"outcome"`
	Seconds float64 `json:"seconds"`
	// Proxies are the connected proxies checked; Reaching those that could
	// still send the pod new calls when the answer was given.
	Proxies  int `json:"proxies"`
	Reaching int `json:"reaching"`
	// Replicas are the controller's replicas whose word was counted, the
	// one that answered first; ReplicasReaching those others that had not
	// said their proxies were clear of the pod; ReplicasGone the replicas
	// not waited for (stopped, or silent past their heartbeat's expiry).
	Replicas         []string `json:"replicas"`
	ReplicasReaching []string `json:"replicasReaching"`
	ReplicasGone     []string `json:"replicasGone"`
}

// Wait asks the drain endpoint and waits for its answer (bounded by the
// pod's grace period on the controller's side, and by ctx). An answer
// that the wait timed out is an Answer, not an error: the caller stops
// anyway.
func Wait(ctx context.Context, r Request) (Answer, error) {
	if r.URL == "" {
		r.URL = os.Getenv(wire.EnvDrainURL)
	}
	if r.URL == "" {
		return Answer{}, fmt.Errorf("no drain endpoint: %s is not set", wire.EnvDrainURL)
	}
	hc := &http.Client{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return Answer{}, fmt.Errorf("the drain endpoint %q: %w", r.URL, err)
	}
	if strings.HasPrefix(r.URL, "https://") {
		roots, err := os.ReadFile(or(r.RootsFile, wire.RootsFile))
		if err != nil {
			return Answer{}, fmt.Errorf("reading the mesh roots: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(roots) {
			return Answer{}, errors.New("the mesh roots file holds no certificate")
		}
		tok, err := os.ReadFile(or(r.TokenFile, wire.TokenFile))
		if err != nil {
			return Answer{}, fmt.Errorf("reading the pod's token: %w", err)
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: r.ServerName, MinVersion: tls.VersionTLS12}}
		req.Header.Set("Authorization", wire.BearerPrefix+strings.TrimSpace(string(tok)))
	}
	if r.Node != "" {
		req.Header.Set(wire.DrainNodeHeader, r.Node)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Answer{}, fmt.Errorf("asking the drain endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return Answer{}, fmt.Errorf("reading the drain endpoint's answer: %w", err)
	}
	var a Answer
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusGatewayTimeout || json.Unmarshal(body, &a) != nil {
		return Answer{}, fmt.Errorf("the drain endpoint answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return a, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
