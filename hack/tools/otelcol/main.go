// Command otelcol is an OpenTelemetry collector with the fewest components
// weft's tests need: the OTLP receiver (gRPC and HTTP), contrib's file
// exporter, which writes what arrives as OTLP JSON lines a test can read,
// and the OTLP/HTTP exporter, which forwards metrics to Prometheus's OTLP
// receiver as a mesh's collector would.
// Its own telemetry is its log on stderr; it exports no metrics or traces
// of itself. Usage:
//
//	otelcol --config=FILE
//
// It runs until SIGTERM or SIGINT.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/otlphttpexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry"
	"go.uber.org/zap"
)

// version is stamped by hack/build-tools.sh: the core collector's version.
var version = "dev"

func components() (otelcol.Factories, error) {
	receivers, err := otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	exporters, err := otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory(), otlphttpexporter.NewFactory())
	if err != nil {
		return otelcol.Factories{}, err
	}
	return otelcol.Factories{Receivers: receivers, Exporters: exporters, Telemetry: logOnly()}, nil
}

// logOnly is the collector's own telemetry: a log on stderr; its meter and
// tracer providers are the no-op defaults.
func logOnly() telemetry.Factory {
	type config struct{}
	return telemetry.NewFactory(func() component.Config { return &config{} },
		telemetry.WithCreateLogger(func(context.Context, telemetry.LoggerSettings, component.Config) (*zap.Logger, component.ShutdownFunc, error) {
			l, err := zap.NewProduction()
			if err != nil {
				return nil, nil, err
			}
			return l, func(context.Context) error { _ = l.Sync(); return nil }, nil
		}))
}

func main() {
	cmd := otelcol.NewCommand(otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{Command: "otelcol", Description: "OpenTelemetry collector for weft's tests (OTLP in; files and OTLP/HTTP out)", Version: version},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{ResolverSettings: confmap.ResolverSettings{
			ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()},
			DefaultScheme:     "file",
		}},
	})
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
