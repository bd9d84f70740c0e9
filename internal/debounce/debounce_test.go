package debounce

import (
	"context"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// harness runs Run on a fake clock and reports each fire.
type harness struct {
	clk     *clocktesting.FakeClock
	in      chan struct{}
	handled chan struct{}
	fired   chan struct{}
}

func start(t *testing.T, quiet, maxWait time.Duration) *harness {
	t.Helper()
	h := &harness{clk: clocktesting.NewFakeClock(time.Unix(0, 0)), in: make(chan struct{}),
		handled: make(chan struct{}, 1000), fired: make(chan struct{}, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go run(ctx, h.clk, h.in, quiet, maxWait, func() { h.fired <- struct{}{} }, func() { h.handled <- struct{}{} })
	return h
}

// event sends one event and waits until Run has set its timers for it.
func (h *harness) event() {
	h.in <- struct{}{}
	<-h.handled
}

func (h *harness) step(d time.Duration) { h.clk.Step(d) }

// fires counts the calls of fire so far; a call due after a step is
// waited for, so a missing call shows as a count that is too low.
func (h *harness) fires(want int) int {
	n := 0
	for n < want {
		select {
		case <-h.fired:
			n++
		case <-time.After(10 * time.Second):
			return n
		}
	}
	select {
	case <-h.fired:
		n++
	case <-time.After(50 * time.Millisecond):
	}
	return n
}

func TestBurstFiresOnceAfterQuiet(t *testing.T) {
	h := start(t, 100*time.Millisecond, time.Second)
	for range 50 {
		h.event()
	}
	h.step(99 * time.Millisecond)
	if n := h.fires(0); n != 0 {
		t.Fatalf("fired %d times before the quiet period ended", n)
	}
	h.step(time.Millisecond)
	if n := h.fires(1); n != 1 {
		t.Fatalf("a burst of 50 events fired %d times, want 1", n)
	}
}

func TestSteadyEventsFireAtMax(t *testing.T) {
	h := start(t, 100*time.Millisecond, time.Second)
	// An event every 50 ms never lets the quiet period pass; the maximum delay
	// bounds how long the first one waits.
	h.event()
	for range 19 {
		h.step(50 * time.Millisecond)
		h.event()
	}
	if n := h.fires(0); n != 0 {
		t.Fatalf("fired %d times before the maximum delay", n)
	}
	h.step(50 * time.Millisecond) // 1 s since the first event
	if n := h.fires(1); n != 1 {
		t.Fatalf("fired %d times within the maximum delay, want 1", n)
	}
	// The events after that are a new burst.
	h.event()
	h.step(100 * time.Millisecond)
	if n := h.fires(1); n != 1 {
		t.Fatalf("the next burst fired %d times, want 1", n)
	}
}
