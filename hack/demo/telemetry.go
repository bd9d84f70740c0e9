package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	experimental "google.golang.org/grpc/experimental/opentelemetry"
	"google.golang.org/grpc/stats/opentelemetry"
)

// The demo's workloads report through grpc-go's OpenTelemetry plugin when
// they run with the environment weft's injector gives proxyless pods
// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS, the
// collectors and the sampler: docs/observability.md). The quick start does
// not give it; test/observability_test.go does, from the injector's own
// output.

// telemetry is what a workload's channels and server report through.
type telemetry struct {
	dial     grpc.DialOption
	serve    grpc.ServerOption
	shutdown func(context.Context) error
}

// setupTelemetry turns on grpc-go's metrics and traces when the
// environment asks for OpenTelemetry (the injector sets
// OTEL_RESOURCE_ATTRIBUTES on every proxyless container); without it the
// options change nothing.
func setupTelemetry(ctx context.Context) (telemetry, error) {
	if os.Getenv("OTEL_RESOURCE_ATTRIBUTES") == "" {
		return telemetry{dial: grpc.EmptyDialOption{}, serve: grpc.EmptyServerOption{}, shutdown: func(context.Context) error { return nil }}, nil
	}
	return grpcOpenTelemetry(ctx)
}

// grpcOpenTelemetry is what docs/observability.md shows an application:
// the OpenTelemetry SDK set up from the environment alone (exporters,
// resource, sampler, propagator) and handed to grpc-go's plugin.
func grpcOpenTelemetry(ctx context.Context) (telemetry, error) {
	// --- docs/observability.md: begin ---
	// Exporters from OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER and
	// OTEL_EXPORTER_OTLP_*; the resource from OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES; the sampler from OTEL_TRACES_SAMPLER(_ARG).
	spans, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return telemetry{}, fmt.Errorf("span exporter: %w", err)
	}
	metrics, err := autoexport.NewMetricReader(ctx)
	if err != nil {
		return telemetry{}, fmt.Errorf("metric reader: %w", err)
	}
	tracer := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans))
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(metrics))
	opts := opentelemetry.Options{
		MetricsOptions: opentelemetry.MetricsOptions{MeterProvider: meter},
		// W3C trace context (traceparent) from OTEL_PROPAGATORS.
		TraceOptions: experimental.TraceOptions{TracerProvider: tracer, TextMapPropagator: autoprop.NewTextMapPropagator()},
	}
	// Clients: grpc.NewClient(target, opentelemetry.DialOption(opts), ...);
	// servers: xds.NewGRPCServer(opentelemetry.ServerOption(opts), ...).
	// On the way out, tracer.Shutdown and meter.Shutdown send what is left.
	// --- docs/observability.md: end ---
	return telemetry{
		dial:  opentelemetry.DialOption(opts),
		serve: opentelemetry.ServerOption(opts),
		shutdown: func(ctx context.Context) error {
			return errors.Join(tracer.Shutdown(ctx), meter.Shutdown(ctx))
		},
	}, nil
}
