package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// soakOptions shape a soak run (-soak): how long, how often a pod is
// replaced, how often the server's memory is read, what is warm-up, and
// what counts as flat and steady.
type soakOptions struct {
	duration, churnEvery, sample, warmup, window time.Duration
	// services is how many services (the first) have their pods
	// replaced, in turn; all when zero.
	services int
	// maxGrowth is the growth, in percent, of the server's heap in use
	// and of its goroutines from the end of the warm-up to the end, that
	// still counts as flat; maxP99Ratio how much the last window's push
	// p99 may exceed the first window's after the warm-up.
	maxGrowth, maxP99Ratio float64
	// profile, when set, is where the server's heap profile at the end
	// goes (with -heap-profile, the one before the soak), to compare with
	// go tool pprof -base.
	profile string
}

// soakSample is the server's memory at a time into the run.
type soakSample struct {
	at  time.Duration
	mem memory
}

// soakEvent is one replaced pod: when, and how long until every client
// acknowledged it.
type soakEvent struct {
	at     time.Duration
	millis float64
}

// soak replaces a pod every churnEvery (one after the other when an
// event takes longer) until the duration has passed, with every client
// connected, reading the server's memory every sample; then it reports
// per window and judges: heap in use and goroutines grew by less than
// maxGrowth percent after the warm-up, and the push p99 of the last
// window is within maxP99Ratio of the first after the warm-up. A failed
// judgement is the error.
func soak(ctx context.Context, ch *child, so soakOptions, out io.Writer) error {
	var none any
	if err := ch.ask(&none, "churnset", so.services); err != nil {
		return err
	}
	start := time.Now()
	var samples []soakSample
	var events []soakEvent
	takeSample := func() error {
		var m memory
		if err := ch.ask(&m, "memory"); err != nil {
			return err
		}
		samples = append(samples, soakSample{at: time.Since(start), mem: m})
		return nil
	}
	if err := takeSample(); err != nil {
		return err
	}
	next := start.Add(so.sample)
	for time.Since(start) < so.duration {
		if err := ctx.Err(); err != nil {
			return err
		}
		begun := time.Now()
		var r event
		if err := ch.ask(&r, "event", "churn"); err != nil {
			return err
		}
		events = append(events, soakEvent{at: begun.Sub(start), millis: r.Millis})
		if !time.Now().Before(next) {
			if err := takeSample(); err != nil {
				return err
			}
			next = next.Add(so.sample)
		}
		if d := so.churnEvery - time.Since(begun); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
	}
	if err := takeSample(); err != nil {
		return err
	}
	if so.profile != "" {
		if err := ch.ask(&none, "heapprofile", so.profile); err != nil {
			return err
		}
	}
	return judgeSoak(so, samples, events, out)
}

// judgeSoak prints the windows' table and the verdicts.
func judgeSoak(so soakOptions, samples []soakSample, events []soakEvent, out io.Writer) error {
	fmt.Fprintf(out, "\n| window | pods replaced | push p50 ms | push p99 ms | max ms | heap in use MiB | RSS MiB | goroutines |\n|---|---|---|---|---|---|---|---|\n")
	type window struct {
		from, to time.Duration
		lat      []float64
	}
	var windows []window
	for from := time.Duration(0); from < so.duration; from += so.window {
		w := window{from: from, to: min(from+so.window, so.duration)}
		for _, e := range events {
			if e.at >= w.from && e.at < w.to {
				w.lat = append(w.lat, e.millis)
			}
		}
		windows = append(windows, w)
		// The memory read last in the window.
		var m memory
		for _, s := range samples {
			if s.at <= w.to {
				m = s.mem
			}
		}
		note := ""
		if w.to <= so.warmup {
			note = " (warm-up)"
		}
		fmt.Fprintf(out, "| %v–%v%s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %d |\n", w.from, w.to, note, len(w.lat),
			pct(w.lat, 50), pct(w.lat, 99), pct(w.lat, 100), mib(m.HeapInuse), mib(m.RSS), m.Goroutines)
	}

	var errs []error
	// Memory and goroutines: the first reading at or after the warm-up
	// against the last one.
	var base *soakSample
	for i := range samples {
		if samples[i].at >= so.warmup {
			base = &samples[i]
			break
		}
	}
	last := samples[len(samples)-1]
	if base == nil || base == &samples[len(samples)-1] {
		errs = append(errs, fmt.Errorf("no memory reading after the %v warm-up to compare with the last", so.warmup))
	} else {
		growth := func(a, b float64) float64 { return 100 * (b - a) / a }
		heap := growth(float64(base.mem.HeapInuse), float64(last.mem.HeapInuse))
		gor := growth(float64(base.mem.Goroutines), float64(last.mem.Goroutines))
		fmt.Fprintf(out, "\nfrom %v to %v: heap in use %.1f → %.1f MiB (%+.1f%%), goroutines %d → %d (%+.1f%%), RSS %.1f → %.1f MiB, peak RSS %.1f MiB\n",
			base.at.Round(time.Second), last.at.Round(time.Second), mib(base.mem.HeapInuse), mib(last.mem.HeapInuse), heap,
			base.mem.Goroutines, last.mem.Goroutines, gor, mib(base.mem.RSS), mib(last.mem.RSS), mib(last.mem.PeakRSS))
		if heap >= so.maxGrowth {
			errs = append(errs, fmt.Errorf("heap in use grew %.1f%% after the warm-up (limit %.0f%%)", heap, so.maxGrowth))
		}
		if gor >= so.maxGrowth {
			errs = append(errs, fmt.Errorf("goroutines grew %.1f%% after the warm-up (limit %.0f%%)", gor, so.maxGrowth))
		}
	}
	// Push p99: the first window after the warm-up against the last.
	var first, end *window
	for i := range windows {
		if windows[i].from >= so.warmup && len(windows[i].lat) > 0 {
			if first == nil {
				first = &windows[i]
			}
			end = &windows[i]
		}
	}
	if first == nil || first == end {
		errs = append(errs, errors.New("fewer than two windows of events after the warm-up to compare"))
	} else {
		a, b := pct(first.lat, 99), pct(end.lat, 99)
		fmt.Fprintf(out, "push p99: %.1f ms in the first window after the warm-up, %.1f ms in the last (%.2f×)\n", a, b, b/a)
		if b > so.maxP99Ratio*a {
			errs = append(errs, fmt.Errorf("push p99 rose from %.1f to %.1f ms (limit %.1f×)", a, b, so.maxP99Ratio))
		}
	}
	if len(errs) > 0 {
		var msgs []string
		for _, err := range errs {
			msgs = append(msgs, err.Error())
		}
		return fmt.Errorf("soak: %s", strings.Join(msgs, "; "))
	}
	fmt.Fprintln(out, "soak: memory and goroutines flat, push p99 steady")
	return nil
}
