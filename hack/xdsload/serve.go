package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/internal/mesh"
	"github.com/weftmesh/weft/internal/xds/server"
	"github.com/weftmesh/weft/internal/xds/translate"
	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// Messages of the line protocol between the two processes.
type (
	hello struct{ XDS, Floor string }
	reply struct {
		Error string          `json:",omitempty"`
		Data  json.RawMessage `json:",omitempty"`
	}
	memory struct {
		HeapInuse, RSS, PeakRSS uint64
		Goroutines              int
	}
	settle struct{ Millis float64 }
	event  struct {
		Millis, TranslateMillis float64
		// Bytes is the size of the response every client gets for a
		// change of every endpoint resource.
		Bytes int
	}
)

// loadMesh is the server process's synthetic mesh and what it changes.
type loadMesh struct {
	in       mesh.Input
	services int
	added    int
	flips    int
	churns   int
	// churnSet is how many services (the first) churn replaces pods of;
	// all when zero.
	churnSet int
	// fullPort is the port every endpoint has now (a "full" event moves
	// them all); floor is the serialized response of the last full event.
	fullPort int32
	floor    []byte
}

// runServer is the server process: weft's xDS server over a synthetic mesh
// of n services, and the floor server, driven by commands on in.
func runServer(ctx context.Context, n int, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv, err := server.New(server.Options{Address: "127.0.0.1:0", Log: logr.Discard()})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Start(ctx) }()
	addr, err := srv.Addr(ctx)
	if err != nil {
		return err
	}
	lm := &loadMesh{in: xdstest.ScaleInput(n), services: n, fullPort: 8080}
	srv.OnModel(ctx, mesh.Build(lm.in))
	fl, err := startFloor()
	if err != nil {
		return err
	}
	defer fl.stop()
	w := json.NewEncoder(out)
	if err := w.Encode(hello{XDS: addr, Floor: fl.addr}); err != nil {
		return err
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		data, err := lm.do(ctx, srv, fl, fields)
		r := reply{}
		if err != nil {
			r.Error = err.Error()
		} else if r.Data, err = json.Marshal(data); err != nil {
			return err
		}
		if err := w.Encode(r); err != nil {
			return err
		}
	}
	cancel()
	return errors.Join(sc.Err(), <-errc)
}

func (lm *loadMesh) do(ctx context.Context, srv *server.Server, fl *floor, cmd []string) (any, error) {
	arg := func() int {
		if len(cmd) < 2 {
			return 0
		}
		n, _ := strconv.Atoi(cmd[1])
		return n
	}
	switch cmd[0] {
	case "memory":
		return measureMemory()
	case "heapprofile":
		if len(cmd) < 2 {
			return nil, errors.New("heapprofile needs a file")
		}
		return nil, writeHeapProfile(cmd[1])
	case "settle":
		start := time.Now()
		if _, err := waitSettled(ctx, srv, arg(), start); err != nil {
			return nil, err
		}
		return settle{Millis: millis(time.Since(start))}, nil
	case "event":
		if len(cmd) < 2 {
			return nil, errors.New("event needs a kind")
		}
		return lm.event(ctx, srv, cmd[1])
	case "churnset":
		lm.churnSet = arg()
		return nil, nil
	case "floor":
		d, err := fl.push(ctx, lm.floor, arg())
		return event{Millis: millis(d), Bytes: len(lm.floor)}, err
	}
	return nil, fmt.Errorf("unknown command %q", cmd[0])
}

// event changes the mesh, hands the new model to the server, and waits
// until every connected proxy acknowledged what it must hold.
func (lm *loadMesh) event(ctx context.Context, srv *server.Server, kind string) (event, error) {
	total, _, _ := srv.Settled()
	start := time.Now()
	switch kind {
	case "flap":
		sl := &lm.in.EndpointSlices[lm.flips%lm.services]
		lm.flips++
		ready := sl.Endpoints[0].Conditions.Ready
		flipped := !(ready == nil || *ready)
		sl.Endpoints[0].Conditions.Ready = &flipped
	case "route":
		tp := &lm.in.TrafficPolicies[lm.flips%len(lm.in.TrafficPolicies)]
		lm.flips++
		tp.Generation++
		b := tp.Spec.HTTP[0].Backends
		b[0].Weight, b[1].Weight = b[0].Weight-1, b[1].Weight+1
		if b[1].Weight > 50 {
			b[0].Weight, b[1].Weight = 90, 10
		}
	case "add":
		xdstest.AddScaleService(&lm.in, lm.services+lm.added)
		lm.added++
	case "churn":
		lm.churn()
	case "full":
		lm.fullPort = 8080 + 8081 - lm.fullPort
		for i := range lm.in.EndpointSlices {
			lm.in.EndpointSlices[i].Ports[0].Port = &lm.fullPort
		}
	default:
		return event{}, fmt.Errorf("unknown event %q", kind)
	}
	m := mesh.Build(lm.in)
	srv.OnModel(ctx, m)
	translated := time.Since(start)
	last, err := waitSettled(ctx, srv, total, start)
	if err != nil {
		return event{}, fmt.Errorf("%s: %w", kind, err)
	}
	ev := event{Millis: millis(max(last.Sub(start), translated)), TranslateMillis: millis(translated)}
	if kind == "full" {
		if lm.floor, err = floorResponse(m); err != nil {
			return event{}, err
		}
		ev.Bytes = len(lm.floor)
	}
	return ev, nil
}

// churn replaces a pod of one service, as a rollout does: one endpoint of
// the next service of the churn set in turn gets a new pod name and a new
// address, never used before, so that whatever the server keeps per pod or
// per address would grow if it were never let go.
func (lm *loadMesh) churn() {
	lm.churns++
	n := lm.churns
	set := lm.services
	if lm.churnSet > 0 {
		set = min(lm.churnSet, set)
	}
	i, e := n%set, (n/set)%10
	pod := &lm.in.Pods[i*10+e] // AddScaleService adds ten pods a service, in order
	pod.Name = fmt.Sprintf("svc-%d-%d-r%d", i, e, n)
	ep := &lm.in.EndpointSlices[i].Endpoints[e]
	ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name}
	// 172.16.0.0/12: apart from the scale mesh's 10.0.0.0/8.
	ep.Addresses = []string{fmt.Sprintf("172.%d.%d.%d", 16+(n>>16)&15, (n>>8)&255, n&255)}
}

// waitSettled waits until n proxies are connected and all of them hold
// their current configuration, and returns when the last came to hold it
// (at the earliest, since).
func waitSettled(ctx context.Context, srv *server.Server, n int, since time.Time) (time.Time, error) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		total, settled, last := srv.Settled()
		if total >= n && settled == total {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("after 10 minutes %d of %d proxies hold their configuration (%d wanted)", settled, total, n)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// floorResponse is what a client gets when every endpoint resource
// changed, serialized once: the same resources, as the same delta
// response.
func floorResponse(m *mesh.Model) ([]byte, error) {
	sh, err := translate.BuildShared(m, nil, translate.Options{})
	if err != nil {
		return nil, err
	}
	resp := &discovery.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, SystemVersionInfo: "floor", Nonce: "floor"}
	for _, cla := range sh.Envoy.Endpoints {
		a, err := anypb.New(cla)
		if err != nil {
			return nil, err
		}
		resp.Resources = append(resp.Resources, &discovery.Resource{Name: cla.ClusterName, Version: "floor", Resource: a})
	}
	return proto.Marshal(resp)
}

func measureMemory() (memory, error) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return memory{}, err
	}
	m := memory{HeapInuse: ms.HeapInuse, Goroutines: runtime.NumGoroutine()}
	for _, line := range strings.Split(string(status), "\n") {
		for key, into := range map[string]*uint64{"VmRSS:": &m.RSS, "VmHWM:": &m.PeakRSS} {
			if rest, ok := strings.CutPrefix(line, key); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				*into = kb * 1024
			}
		}
	}
	return m, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	return errors.Join(pprof.WriteHeapProfile(f), f.Close())
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
