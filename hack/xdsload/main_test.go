package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the server process the tool starts.
func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) != "" {
		services := flag.Int("services", 10, "")
		flag.Parse()
		if err := runServer(context.Background(), *services, os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The tool runs end to end on a small mesh: clients in this process, the
// server in another, every kind of event timed and the floor measured.
func TestLoadToolRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o := options{services: 20, clients: 10, events: 3, fullEvents: 2, wave: 5, kinds: "flap,route,add"}
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, row := range []string{"| endpoint flap | 3 |", "| route changed | 3 |", "| service added | 3 |", "| every endpoint resource changed", "| floor: the same bytes, pre-serialized | 2 |", "| the same, from the end of the translation | 2 |", "KiB per proxy", "full push / floor"} {
		if !strings.Contains(out.String(), row) {
			t.Errorf("the report lacks %q", row)
		}
	}
}

// The soak runs end to end on a small mesh (the judgement's limits wide:
// a small heap moves by more than 5% from one reading to the next).
func TestSoakRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o := options{services: 20, clients: 5, wave: 5, soak: soakOptions{duration: 6 * time.Second, churnEvery: 50 * time.Millisecond,
		sample: time.Second, warmup: 2 * time.Second, window: 2 * time.Second, maxGrowth: 1000, maxP99Ratio: 1000}}
	if err := run(ctx, o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, want := range []string{"| 0s–2s (warm-up) |", "| 4s–6s |", "goroutines", "soak: memory and goroutines flat, push p99 steady"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}

// The judgement fails a run whose heap, goroutines or push p99 grew past
// the limits after the warm-up, and passes one that did not.
func TestSoakJudgement(t *testing.T) {
	so := soakOptions{duration: 30 * time.Minute, warmup: 5 * time.Minute, window: 5 * time.Minute, maxGrowth: 5, maxP99Ratio: 1.5}
	mem := func(heapMiB uint64, goroutines int) memory {
		return memory{HeapInuse: heapMiB << 20, RSS: heapMiB << 20, Goroutines: goroutines}
	}
	events := func(lateMillis float64) []soakEvent {
		var es []soakEvent
		for at := time.Duration(0); at < so.duration; at += time.Second {
			ms := 300.0
			if at >= 25*time.Minute {
				ms = lateMillis
			}
			es = append(es, soakEvent{at: at, millis: ms})
		}
		return es
	}
	samples := func(endHeap uint64, endGoroutines int) []soakSample {
		var ss []soakSample
		for m := range 31 {
			s := soakSample{at: time.Duration(m) * time.Minute, mem: mem(600, 2000)}
			if m == 0 {
				s.mem = mem(400, 2000) // before the warm-up: not judged
			}
			if m == 30 {
				s.mem = mem(endHeap, endGoroutines)
			}
			ss = append(ss, s)
		}
		return ss
	}
	for _, tc := range []struct {
		name    string
		samples []soakSample
		events  []soakEvent
		wantErr string
	}{
		{"flat", samples(620, 2050), events(400), ""},
		{"heap grew", samples(640, 2000), events(300), "heap in use grew 6.7%"},
		{"goroutines grew", samples(600, 2200), events(300), "goroutines grew 10.0%"},
		{"push slowed", samples(600, 2000), events(500), "push p99 rose from 300.0 to 500.0 ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := judgeSoak(so, tc.samples, tc.events, &out)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("judged %v\n%s", err, out.String())
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("judged %v, want %q\n%s", err, tc.wantErr, out.String())
			}
		})
	}
}
