package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	// The xds:/// resolver and xDS servers, bootstrapped from
	// $GRPC_XDS_BOOTSTRAP.
	"google.golang.org/grpc/xds"
)

// The demo's workloads are this binary run again with a subcommand, one
// process per pod:
//
//	demo serve -name reviews-v1 -listen 192.0.2.11:9080 [-calls ratings.bookinfo.svc.cluster.local:9080] [-fail-every 3] [-delay 3s] [-ready-file f]
//	demo client -target reviews.bookinfo.svc.cluster.local:9080 [-rate 250] [-window 2s]
//
// A server answers Get with its own name, after calling -calls through the
// mesh when given; -fail-every n fails every n-th call with UNAVAILABLE,
// -delay waits before answering. The client calls its target at a steady rate and prints
// one JSON line (a window) per -window: how many calls each backend
// answered and how many failed.
//
// Both are proxyless gRPC, bootstrapped from $GRPC_XDS_BOOTSTRAP: every
// xds:/// channel is a client of weft's xDS server, and every server is a
// grpc-go xDS server, which serves only once weft has sent the Listener
// for its address (the -ready-file exists while it does), with the
// transport security and the allow rules that Listener says: mutual TLS
// with the pod's certificate files where a PeerAuthentication makes the
// port STRICT, and the MeshService's allow rules checked on the caller's
// certificate, path and method.

// The methods of the demo's services ("reviews" and "ratings" both serve
// them); each takes Empty and answers a StringValue. Get answers the name
// of the pod that served the call, Stats how many calls it served: the
// sample's allow rule on reviews lets the product page call Get only.
const (
	getMethod   = "/bookinfo.Service/Get"
	statsMethod = "/bookinfo.Service/Stats"
)

// window is what the client reports about one stretch of time.
type window struct {
	From     time.Time      `json:"from"`
	To       time.Time      `json:"to"`
	Backends map[string]int `json:"backends"`
	Failed   int            `json:"failed"`
	LastErr  string         `json:"lastError,omitempty"`
	// Slowest is the longest call of the window, failed or not.
	Slowest time.Duration `json:"slowest"`
}

// runWorkload runs the serve or client subcommand until SIGINT or SIGTERM.
func runWorkload(cmd string, args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "serve":
		return runServe(ctx, args)
	case "client":
		return runClient(ctx, args, os.Stdout)
	}
	return fmt.Errorf("unknown workload %q", cmd)
}

func runServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo serve", flag.ContinueOnError)
	name := fs.String("name", "", "the pod's name, which every answer carries")
	listen := fs.String("listen", "", "address to serve on")
	calls := fs.String("calls", "", "a service (host:port) to call through the mesh for every call served")
	failEvery := fs.Int64("fail-every", 0, "fail every n-th call with UNAVAILABLE (0: none)")
	delay := fs.Duration("delay", 0, "how long to wait before answering")
	readyFile := fs.String("ready-file", "", "a file that exists while the server serves (its Listener from weft is in force)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tel, err := setupTelemetry(ctx)
	if err != nil {
		return err
	}
	defer flush(tel)
	var served atomic.Int64
	var upstream *grpc.ClientConn
	if *calls != "" {
		cc, err := dialMesh(*calls, tel.dial)
		if err != nil {
			return err
		}
		defer cc.Close()
		cc.Connect() // connect to the xDS server now, not on the first call
		upstream = cc
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	srv, err := xdsServer(*listen, *readyFile, tel.serve)
	if err != nil {
		return err
	}
	srv.RegisterService(serviceDesc(func(ctx context.Context) (string, error) {
		if n := served.Add(1); *failEvery > 0 && n%*failEvery == 0 {
			return "", status.Errorf(codes.Unavailable, "%s fails every %d-th call", *name, *failEvery)
		}
		if *delay > 0 {
			select {
			case <-time.After(*delay):
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		if upstream != nil {
			if _, err := get(ctx, upstream); err != nil {
				return "", fmt.Errorf("%s calling %s: %w", *name, *calls, err)
			}
		}
		return *name, nil
	}, func(context.Context) (string, error) {
		return fmt.Sprintf("%s served %d calls", *name, served.Load()), nil
	}), nil)
	go func() { <-ctx.Done(); srv.Stop() }()
	if err := srv.Serve(lis); err != nil {
		return fmt.Errorf("serving on %s: %w", *listen, err)
	}
	return nil
}

// xdsServer is a grpc-go xDS server for addr: its transport security and
// authorization come from weft (plain text where weft's Listener asks for
// none). While it serves, readyFile (if any) exists.
func xdsServer(addr, readyFile string, opts ...grpc.ServerOption) (*xds.GRPCServer, error) {
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	mode := xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
		fmt.Fprintf(os.Stderr, "%s: serving mode %v (%v)\n", addr, args.Mode, args.Err)
		if readyFile == "" {
			return
		}
		if args.Mode == connectivity.ServingModeServing {
			_ = os.WriteFile(readyFile, nil, 0o644)
		} else {
			_ = os.Remove(readyFile)
		}
	})
	srv, err := xds.NewGRPCServer(append([]grpc.ServerOption{grpc.Creds(creds), mode}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("an xDS server for %s: %w", addr, err)
	}
	return srv, nil
}

// serviceDesc describes the demo's service: Get answered by get, Stats by
// stats.
func serviceDesc(get, stats func(context.Context) (string, error)) *grpc.ServiceDesc {
	handler := func(answer func(context.Context) (string, error)) grpc.MethodHandler {
		return func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			s, err := answer(ctx)
			if err != nil {
				return nil, err
			}
			return wrapperspb.String(s), nil
		}
	}
	return &grpc.ServiceDesc{
		ServiceName: "bookinfo.Service",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Get", Handler: handler(get)}, {MethodName: "Stats", Handler: handler(stats)}},
	}
}

// dialMesh opens a proxyless channel to a mesh service: grpc-go's own xDS
// client resolves it from weft's xDS server, and its clusters say whether
// to speak mutual TLS (with the pod's certificate files) or plain text.
func dialMesh(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" {
		return nil, errors.New("GRPC_XDS_BOOTSTRAP is not set: the demo writes a bootstrap per pod")
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient("xds:///"+target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dialling xds:///%s: %w", target, err)
	}
	return cc, nil
}

// flush sends what the workload's telemetry still holds, as it stops.
func flush(tel telemetry) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tel.shutdown(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "flushing telemetry: %v\n", err)
	}
}

// get makes one call of Get and returns the name of the pod that
// answered.
func get(ctx context.Context, cc grpc.ClientConnInterface) (string, error) {
	return invoke(ctx, cc, getMethod)
}

// invoke makes one call of a method of the demo's service and returns the
// answer.
func invoke(ctx context.Context, cc grpc.ClientConnInterface, method string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := &wrapperspb.StringValue{}
	// StaticMethod: the method is one of the service's own, so its name
	// may label the call's metrics.
	if err := cc.Invoke(ctx, method, &emptypb.Empty{}, out, grpc.StaticMethod()); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

func runClient(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo client", flag.ContinueOnError)
	target := fs.String("target", "", "the service (host:port) to call through the mesh")
	rate := fs.Int("rate", 250, "calls per second")
	every := fs.Duration("window", 2*time.Second, "how often to report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *every <= 0 {
		return errors.New("-rate and -window must be positive")
	}
	tel, err := setupTelemetry(ctx)
	if err != nil {
		return err
	}
	defer flush(tel)
	cc, err := dialMesh(*target, tel.dial)
	if err != nil {
		return err
	}
	defer cc.Close()
	return callSteadily(ctx, cc, time.Second/time.Duration(*rate), *every, json.NewEncoder(out))
}

// callSteadily calls at one call per tick and reports a window every
// every, until ctx ends.
func callSteadily(ctx context.Context, cc *grpc.ClientConn, tick, every time.Duration, enc *json.Encoder) error {
	ticker, report := time.NewTicker(tick), time.NewTicker(every)
	defer ticker.Stop()
	defer report.Stop()
	w := window{From: time.Now(), Backends: map[string]int{}}
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-report.C:
			w.To = now
			if err := enc.Encode(w); err != nil {
				return fmt.Errorf("reporting: %w", err)
			}
			w = window{From: now, Backends: map[string]int{}}
		case <-ticker.C:
			start := time.Now()
			name, err := get(ctx, cc)
			w.Slowest = max(w.Slowest, time.Since(start))
			if err != nil {
				w.Failed, w.LastErr = w.Failed+1, err.Error()
				continue
			}
			w.Backends[name]++
		}
	}
}
