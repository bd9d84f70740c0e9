package acks

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/internal/mesh"
)

const lds = "type.googleapis.com/envoy.config.listener.v3.Listener"

// A proxy counts as synced for a resource once it acknowledged the cache's
// version of every type after the push that carried the resource's
// generation; a NACK names the proxy and its error, and the next ACK
// clears it; a disconnected proxy no longer counts.
func TestTracker(t *testing.T) {
	versions := map[string]string{lds: "1"}
	tr := New(func(string) map[string]string { return versions }, logr.Discard())
	ms := mesh.Ref{Kind: mesh.KindMeshService, Namespace: "ns", Name: "web"}
	pa := mesh.Ref{Kind: mesh.KindPeerAuthentication, Namespace: "ns", Name: "strict"}
	count := func(ref mesh.Ref, gen int64) (int, int, string) {
		return tr.ProxiesFor(ref.Kind, ref.Namespace, ref.Name, gen)
	}

	// A proxy that has asked for nothing yet holds nothing.
	versions = map[string]string{}
	tr.Connect("p1", "grpc")
	tr.Pushed("p1", Stamp{ms: 2, pa: 1})
	if total, synced, _ := count(ms, 2); total != 1 || synced != 0 {
		t.Fatalf("before it asked: %d of %d synced", synced, total)
	}
	versions = map[string]string{lds: "1"}
	tr.Pushed("p1", Stamp{ms: 2, pa: 1})
	if total, synced, _ := count(ms, 2); total != 1 || synced != 0 {
		t.Fatalf("before any ACK: %d of %d synced", synced, total)
	}
	tr.Sent("p1", lds, "n1", "1")
	tr.Replied("p1", lds, "n1", "")
	if total, synced, _ := count(ms, 2); total != 1 || synced != 1 {
		t.Fatalf("after the ACK: %d of %d synced", synced, total)
	}
	if total, synced, _ := count(pa, 1); total != 1 || synced != 1 {
		t.Fatalf("PeerAuthentication: %d of %d synced", synced, total)
	}
	if total, _, _ := count(mesh.Ref{Kind: mesh.KindPeerAuthentication, Namespace: "ns", Name: "other"}, 1); total != 0 {
		t.Fatalf("a resource no proxy holds counts %d proxies", total)
	}
	if total, settled, _ := tr.Settled(); total != 1 || settled != 1 {
		t.Fatalf("settled %d of %d", settled, total)
	}

	// A new version is pushed and refused.
	versions = map[string]string{lds: "2"}
	tr.Pushed("p1", Stamp{ms: 3})
	tr.Sent("p1", lds, "n2", "2")
	tr.Replied("p1", lds, "n2", "bad listener")
	total, synced, rejected := count(ms, 3)
	if total != 1 || synced != 0 || !strings.Contains(rejected, "p1") || !strings.Contains(rejected, "bad listener") {
		t.Fatalf("after the NACK: %d of %d synced, rejected %q", synced, total, rejected)
	}
	if _, nacked := tr.Replies("p1"); !strings.Contains(nacked[lds], "bad listener") {
		t.Fatalf("Replies: %v", nacked)
	}
	// An unknown nonce changes nothing.
	tr.Replied("p1", lds, "n-unknown", "")
	if _, synced, _ := count(ms, 3); synced != 0 {
		t.Fatal("an ACK of an unknown nonce counted")
	}
	tr.Sent("p1", lds, "n3", "2")
	tr.Replied("p1", lds, "n3", "")
	if _, synced, rejected := count(ms, 3); synced != 1 || rejected != "" {
		t.Fatalf("after the next ACK: synced %d, rejected %q", synced, rejected)
	}

	// Drain the change signal, then disconnect: signalled, and gone.
	select {
	case <-tr.Changes():
	default:
	}
	tr.Disconnect("p1")
	select {
	case <-tr.Changes():
	default:
		t.Fatal("a disconnect did not signal a change")
	}
	if total, _, _ := count(ms, 3); total != 0 {
		t.Fatalf("a disconnected proxy still counts: %d", total)
	}
}

// A scope's stamp holds its services, the policies on different ports of
// one service, and the PeerAuthentications that set its endpoints' modes;
// nothing of a service outside it.
func TestStampOfScope(t *testing.T) {
	strict := mesh.Ref{Kind: mesh.KindPeerAuthentication, Namespace: "ns", Name: "strict"}
	m := &mesh.Model{Order: []string{"ns/db", "ns/web"}, Shaping: map[mesh.Ref]int64{strict: 5}, Services: map[string]*mesh.Service{
		"ns/web": {Namespace: "ns", Name: "web", Generation: 4,
			Policies:  []mesh.Policy{{Name: "http", Generation: 2, Port: 80}, {Name: "grpc", Generation: 7, Port: 9090}},
			Endpoints: []mesh.Endpoint{{Address: "10.0.0.1", ModeBy: [2]mesh.Ref{strict}}}},
		"ns/db": {Namespace: "ns", Name: "db", Generation: 1, Policies: []mesh.Policy{{Name: "db-policy", Generation: 3}}},
	}}
	st := StampOf(m, []string{"ns/web"})
	want := Stamp{
		{Kind: mesh.KindMeshService, Namespace: "ns", Name: "web"}:    4,
		{Kind: mesh.KindTrafficPolicy, Namespace: "ns", Name: "http"}: 2,
		{Kind: mesh.KindTrafficPolicy, Namespace: "ns", Name: "grpc"}: 7,
		strict: 5,
	}
	if !maps.Equal(st, want) {
		t.Errorf("stamp %v, want %v", st, want)
	}
}

// A proxy's stamps are its scope's and its own: a resource in either
// counts it, and it is synced for a resource once it acknowledged.
func TestTrackerStamps(t *testing.T) {
	versions := map[string]string{lds: "1"}
	tr := New(func(string) map[string]string { return versions }, logr.Discard())
	callee := mesh.Ref{Kind: mesh.KindMeshService, Namespace: "ns", Name: "web"}
	served := mesh.Ref{Kind: mesh.KindMeshService, Namespace: "ns", Name: "own"}
	elsewhere := mesh.Ref{Kind: mesh.KindMeshService, Namespace: "ns", Name: "db"}
	tr.Connect("p1", "envoy")
	tr.Pushed("p1", Stamp{callee: 2}, Stamp{served: 3})
	tr.Sent("p1", lds, "n1", "1")
	tr.Replied("p1", lds, "n1", "")
	for ref, gen := range map[mesh.Ref]int64{callee: 2, served: 3} {
		if total, synced, _ := tr.ProxiesFor(ref.Kind, ref.Namespace, ref.Name, gen); total != 1 || synced != 1 {
			t.Errorf("%v: %d of %d synced, want 1 of 1", ref, synced, total)
		}
	}
	if total, _, _ := tr.ProxiesFor(elsewhere.Kind, elsewhere.Namespace, elsewhere.Name, 1); total != 0 {
		t.Errorf("a service in neither stamp counts %d proxies", total)
	}
	if f := tr.Flavours(served.Kind, served.Namespace, served.Name); f["envoy"] != 1 {
		t.Errorf("Flavours of the served service: %v", f)
	}
}

// A proxy that serves STRICT ports in plain text counts for the
// PeerAuthentications it names until it serves them otherwise or goes.
func TestTrackerPlainText(t *testing.T) {
	tr := New(func(string) map[string]string { return nil }, logr.Discard())
	strict := mesh.Ref{Kind: mesh.KindPeerAuthentication, Namespace: "ns", Name: "strict"}
	count := func() int { return tr.TakingPlainText(strict.Kind, strict.Namespace, strict.Name) }
	tr.Connect("p1", "grpc")
	tr.Connect("p2", "grpc")
	tr.PlainText("p1", []mesh.Ref{strict})
	tr.PlainText("p2", []mesh.Ref{strict})
	if n := count(); n != 2 {
		t.Fatalf("%d proxies take plain text, want 2", n)
	}
	tr.PlainText("p1", nil)
	tr.Disconnect("p2")
	if n := count(); n != 0 {
		t.Fatalf("%d proxies take plain text after one stopped and one left, want 0", n)
	}
}

// Waiting gives, by flavour, when the stalest proxy was first sent what
// it has not acknowledged since: kept through later pushes and NACKs,
// cleared by the ACK that brings it level, and never for a proxy that
// asked for nothing or left.
func TestWaiting(t *testing.T) {
	versions := map[string]map[string]string{"p1": {}, "p2": {lds: "1"}, "e1": {lds: "1"}}
	tr := New(func(id string) map[string]string { return versions[id] }, logr.Discard())
	tr.Connect("p1", "grpc")
	tr.Pushed("p1", Stamp{})
	if w := tr.Waiting(); len(w) != 0 {
		t.Fatalf("a proxy that asked for nothing waits: %v", w)
	}
	before := time.Now()
	tr.Connect("p2", "grpc")
	tr.Pushed("p2", Stamp{})
	tr.Connect("e1", "envoy")
	tr.Pushed("e1", Stamp{})
	w := tr.Waiting()
	first := w["grpc"]
	if len(w) != 2 || first.Before(before) || w["envoy"].Before(first) {
		t.Fatalf("after pushes to p2 and e1: %v", w)
	}
	// p2 rejects, is pushed a later version: it still waits since the first.
	tr.Sent("p2", lds, "n1", "1")
	tr.Replied("p2", lds, "n1", "bad listener")
	versions["p2"] = map[string]string{lds: "2"}
	tr.Pushed("p2", Stamp{})
	if got := tr.Waiting()["grpc"]; !got.Equal(first) {
		t.Fatalf("after a NACK and a later push, grpc waits since %v, want %v", got, first)
	}
	// Its ACK of the current version clears it; e1 leaves.
	tr.Sent("p2", lds, "n2", "2")
	tr.Replied("p2", lds, "n2", "")
	tr.Disconnect("e1")
	if w := tr.Waiting(); len(w) != 0 {
		t.Fatalf("after p2's ACK and e1 leaving: %v", w)
	}
	// A new version waits anew, from its own push.
	versions["p2"] = map[string]string{lds: "3"}
	again := time.Now()
	tr.Pushed("p2", Stamp{})
	if got := tr.Waiting()["grpc"]; got.Before(again) {
		t.Fatalf("a new push waits since %v, before it was made (%v)", got, again)
	}
}
