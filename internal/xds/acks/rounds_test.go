package acks

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// propagation reads weft_xds_propagation_duration_seconds: how many
// rounds were observed and the sum of their seconds.
func propagation(t *testing.T) (count uint64, sum float64) {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "weft_xds_propagation_duration_seconds" {
			h := f.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	return 0, 0
}

// proxies reads weft_xds_proxies for a flavour.
func proxies(t *testing.T, flavour string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "weft_xds_proxies" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == flavour {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// A model's round is observed once every proxy whose configuration it
// changed has acknowledged it, with the time since its change was seen; a
// model that changed nobody's configuration is not observed; a proxy that
// rejects it holds the round until it acknowledges a later one; a round
// whose proxies all left unacknowledged is dropped.
func TestPropagationRounds(t *testing.T) {
	versions := map[string]map[string]string{}
	tr := New(func(id string) map[string]string { return versions[id] }, logr.Discard())
	nonce := 0
	ack := func(id, nack string) {
		nonce++
		n := string(rune('a' + nonce))
		tr.Sent(id, lds, n, versions[id][lds])
		tr.Replied(id, lds, n, nack)
	}
	grpcBefore, envoyBefore := proxies(t, "grpc"), proxies(t, "envoy")
	for _, id := range []string{"p1", "p2"} {
		versions[id] = map[string]string{lds: "1"}
		tr.Connect(id, map[string]string{"p1": "grpc", "p2": "envoy"}[id])
		tr.Pushed(id)
		ack(id, "")
	}
	if g, e := proxies(t, "grpc")-grpcBefore, proxies(t, "envoy")-envoyBefore; g != 1 || e != 1 {
		t.Fatalf("weft_xds_proxies moved by grpc %v, envoy %v; want 1 each", g, e)
	}
	count, _ := propagation(t)

	// A change for p1 only: observed when p1 acknowledges, not before.
	changed := time.Now().Add(-2 * time.Second)
	tr.StartRound(changed)
	versions["p1"] = map[string]string{lds: "2"}
	tr.Pushed("p1")
	tr.Pushed("p2")
	tr.EndRound()
	if c, _ := propagation(t); c != count {
		t.Fatalf("observed %d rounds before the proxy acknowledged", c-count)
	}
	ack("p1", "")
	c, sum := propagation(t)
	if c != count+1 || sum < 2 {
		t.Fatalf("after the ACK: %d rounds observed, sum %vs; want 1 round of at least 2 s", c-count, sum)
	}
	count = c

	// A model that changes nobody's configuration is not observed.
	tr.StartRound(time.Now())
	tr.Pushed("p1")
	tr.Pushed("p2")
	tr.EndRound()
	if c, _ := propagation(t); c != count {
		t.Fatalf("a model that changed nothing was observed")
	}

	// A proxy that acknowledges before its push is recorded counts at once.
	tr.StartRound(time.Now())
	versions["p2"] = map[string]string{lds: "2"}
	ack("p2", "")
	tr.Pushed("p2")
	tr.EndRound()
	if c, _ := propagation(t); c != count+1 {
		t.Fatalf("a round acknowledged during its push: %d observed, want 1", c-count)
	}
	count++

	// A NACK holds the round; the ACK of the next one pays both.
	tr.StartRound(time.Now())
	versions["p1"] = map[string]string{lds: "3"}
	tr.Pushed("p1")
	tr.EndRound()
	ack("p1", "bad listener")
	tr.StartRound(time.Now())
	versions["p1"] = map[string]string{lds: "4"}
	tr.Pushed("p1")
	tr.EndRound()
	if c, _ := propagation(t); c != count {
		t.Fatalf("a rejected round was observed")
	}
	ack("p1", "")
	if c, _ := propagation(t); c != count+2 {
		t.Fatalf("after the ACK of the later model: %d observed, want 2", c-count)
	}
	count += 2

	// A round whose proxy leaves unacknowledged is dropped.
	tr.StartRound(time.Now())
	versions["p2"] = map[string]string{lds: "5"}
	tr.Pushed("p2")
	tr.EndRound()
	tr.Disconnect("p2")
	tr.Disconnect("p1")
	if c, _ := propagation(t); c != count {
		t.Fatalf("a round nobody acknowledged was observed")
	}
	if len(tr.rounds) != 0 {
		t.Fatalf("%d rounds kept with no proxy connected", len(tr.rounds))
	}
	if g, e := proxies(t, "grpc")-grpcBefore, proxies(t, "envoy")-envoyBefore; g != 0 || e != 0 {
		t.Fatalf("weft_xds_proxies after both left: grpc %v, envoy %v more than before", g, e)
	}
}
