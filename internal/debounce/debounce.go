// Package debounce turns bursts of events into single calls: a call
// happens once events have been quiet for a while, or once the first
// event of a burst is old enough, whichever comes first.
package debounce

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// Run calls fire after events arrive on in: when no event has come for
// quiet, or when maxWait has passed since the first event not yet fired for.
// It returns when ctx ends.
func Run(ctx context.Context, clk clock.Clock, in <-chan struct{}, quiet, maxWait time.Duration, fire func()) {
	run(ctx, clk, in, quiet, maxWait, fire, func() {})
}

// run is Run with a hook called once each event has been handled, which
// lets a test move a fake clock only when the timers are set.
func run(ctx context.Context, clk clock.Clock, in <-chan struct{}, quiet, maxWait time.Duration, fire, handled func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in:
		}
		quietT, maxT := clk.NewTimer(quiet), clk.NewTimer(maxWait)
		handled()
	burst:
		for {
			select {
			case <-ctx.Done():
				quietT.Stop()
				maxT.Stop()
				return
			case <-in:
				quietT.Stop()
				quietT = clk.NewTimer(quiet)
				handled()
			case <-quietT.C():
				break burst
			case <-maxT.C():
				break burst
			}
		}
		quietT.Stop()
		maxT.Stop()
		fire()
	}
}
