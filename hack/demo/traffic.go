package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// traffic holds the windows that the client reports, as they arrive.
type traffic struct {
	mu      sync.Mutex
	windows []window      // the latest ones, oldest first
	changed chan struct{} // closed and replaced when a window arrives or the stream ends
	err     error         // why the stream ended
}

// keepWindows bounds what traffic remembers (a minute at one a second).
const keepWindows = 64

func newTraffic() *traffic { return &traffic{changed: make(chan struct{})} }

// read decodes the client's windows from r until it ends.
func (t *traffic) read(r io.Reader) {
	dec := json.NewDecoder(r)
	for {
		var w window
		err := dec.Decode(&w)
		t.mu.Lock()
		if err != nil {
			t.err = fmt.Errorf("the client's reports ended: %w", err)
		} else {
			t.windows = append(t.windows, w)
			if len(t.windows) > keepWindows {
				t.windows = slices.Delete(t.windows, 0, len(t.windows)-keepWindows)
			}
		}
		close(t.changed)
		t.changed = make(chan struct{})
		t.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// next returns the first window that starts at or after from, waiting for
// it.
func (t *traffic) next(ctx context.Context, from time.Time) (window, error) {
	for {
		t.mu.Lock()
		for _, w := range t.windows {
			if !w.From.Before(from) {
				t.mu.Unlock()
				return w, nil
			}
		}
		changed, err := t.changed, t.err
		t.mu.Unlock()
		if err != nil {
			return window{}, err
		}
		select {
		case <-ctx.Done():
			return window{}, ctx.Err()
		case <-changed:
		}
	}
}

// measure prints the windows that start at or after from until they hold
// at least calls calls (a loaded machine makes fewer calls per window),
// then the split over all of them.
func (t *traffic) measure(ctx context.Context, out io.Writer, from time.Time, calls int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	sum := window{From: from, Backends: map[string]int{}}
	for sum.total() < calls {
		w, err := t.next(ctx, from)
		if err != nil {
			return fmt.Errorf("waiting for the client's next report: %w", err)
		}
		fmt.Fprintln(out, w.line())
		for b, c := range w.Backends {
			sum.Backends[b] += c
		}
		sum.Failed, sum.Slowest = sum.Failed+w.Failed, max(sum.Slowest, w.Slowest)
		from = w.To
	}
	fmt.Fprintf(out, "\n==> Measured over %d calls: %s; slowest call %v\n", sum.total(), sum.split(), sum.Slowest.Round(time.Millisecond))
	return nil
}

// live prints every window as it arrives until ctx ends.
func (t *traffic) live(ctx context.Context, out io.Writer) error {
	from := time.Now()
	for {
		w, err := t.next(ctx, from)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(out, w.line())
		from = w.To
	}
}

func (w window) total() int {
	n := w.Failed
	for _, c := range w.Backends {
		n += c
	}
	return n
}

// split says what share of the calls each backend answered, by name, and
// how many failed: "reviews-v1 90.2%, reviews-v2 9.8% (0 failed)".
func (w window) split() string {
	total := w.total()
	if total == 0 {
		return "no calls"
	}
	var parts []string
	for _, b := range slices.Sorted(maps.Keys(w.Backends)) {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", b, 100*float64(w.Backends[b])/float64(total)))
	}
	s := strings.Join(parts, ", ") + fmt.Sprintf(" (%d failed)", w.Failed)
	if w.LastErr != "" {
		s += ", last error: " + w.LastErr
	}
	return s
}

// line is how a window is shown as it arrives.
func (w window) line() string {
	return fmt.Sprintf("    %s  reviews: %s, %d calls, slowest %v", w.To.Format("15:04:05"), w.split(), w.total(), w.Slowest.Round(time.Millisecond))
}

// proxyStatus asks weft's xDS server (Client Status Discovery Service)
// for each connected proxy's state per xDS type, by type's short name
// ("RouteConfiguration"): "SYNCED" and the version it acknowledged, or
// another state.
func proxyStatus(ctx context.Context, xds string) (map[string]map[string]string, error) {
	cc, err := grpc.NewClient(xds, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to the xDS server at %s: %w", xds, err)
	}
	defer cc.Close()
	resp, err := statusv3.NewClientStatusDiscoveryServiceClient(cc).FetchClientStatus(ctx, &statusv3.ClientStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("asking %s for the proxies' status: %w", xds, err)
	}
	out := map[string]map[string]string{}
	for _, c := range resp.GetConfig() {
		types := map[string]string{}
		for _, x := range c.GetGenericXdsConfigs() {
			kind := x.GetTypeUrl()[strings.LastIndex(x.GetTypeUrl(), ".")+1:]
			types[kind] = x.GetConfigStatus().String() + " " + x.GetVersionInfo()
		}
		out[c.GetNode().GetId()] = types
	}
	return out, nil
}

// waitSynced waits until the proxies ids are connected and every
// connected proxy has acknowledged what it was sent, of every xDS type.
func waitSynced(ctx context.Context, xds string, ids []string) error {
	return poll(ctx, "the proxies to acknowledge their configuration", func(ctx context.Context) error {
		st, err := proxyStatus(ctx, xds)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if st[id] == nil {
				return fmt.Errorf("proxy %s is not connected", id)
			}
		}
		for id, types := range st {
			for t, s := range types {
				if !strings.HasPrefix(s, "SYNCED ") {
					return fmt.Errorf("proxy %s: %s %s", id, t, s)
				}
			}
		}
		return nil
	})
}

// waitRoutesChanged waits until a proxy has acknowledged route
// configuration other than before (its version, as proxyStatus reports
// it) and returns it. A proxy's route version covers only the routes it
// asked for: a gRPC client asks for those of the services it calls.
func waitRoutesChanged(ctx context.Context, xds, id, before string) (string, error) {
	var routes string
	err := poll(ctx, "proxy "+id+" to acknowledge new routes", func(ctx context.Context) error {
		st, err := proxyStatus(ctx, xds)
		if err != nil {
			return err
		}
		routes = st[id]["RouteConfiguration"]
		if !strings.HasPrefix(routes, "SYNCED ") || routes == before {
			return fmt.Errorf("it runs routes %q", routes)
		}
		return nil
	})
	return routes, err
}

// poll runs check every 100 ms until it returns nil, for at most a minute.
func poll(ctx context.Context, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
