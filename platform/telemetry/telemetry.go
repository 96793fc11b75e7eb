// Package telemetry sets up what makes a Lethe process observable from its
// first request: structured logs (log/slog), OpenTelemetry traces (exported
// over OTLP when an endpoint is configured) with W3C trace-context
// propagation, and OpenTelemetry metrics exposed in the Prometheus format.
//
// Traces are sampled (NewSampler): every span of a change of state and of
// a failed call is kept, reads at a ratio (1% by default) unless their
// caller sampled the trace. The gRPC server's stats handler
// (NewServerHandler) records a span and the RPC histogram per call.
//
// Providers are returned rather than installed globally, so several servers
// in one test process do not share or overwrite each other's state.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// Config says where telemetry goes.
type Config struct {
	// ServiceName names the process in traces and metrics ("lethe-consent").
	ServiceName string
	// OTLPEndpoint, when set, is the host:port of an OTLP/gRPC collector that
	// receives traces. Empty keeps traces in-process (still propagated, so a
	// downstream system's spans join the caller's trace).
	OTLPEndpoint string
	// OTLPInsecure sends traces without TLS, for a collector on loopback or
	// a sidecar.
	OTLPInsecure bool
	// SpanExporter, when set, receives spans instead of OTLP; tests use an
	// in-memory exporter.
	SpanExporter sdktrace.SpanExporter
	// ReadRatio is the share of reads traced that no caller's sampled
	// trace asks for (see NewSampler): DefaultReadRatio when zero, none
	// when negative, every one at 1. Changes of state and failed calls
	// are traced whatever it is.
	ReadRatio float64
}

// Providers are the telemetry handles a process passes to what it builds.
type Providers struct {
	Tracer     *sdktrace.TracerProvider
	Meter      *sdkmetric.MeterProvider
	Propagator propagation.TextMapPropagator
	// Registry holds the Prometheus collectors; MetricsHandler serves it.
	Registry *prometheus.Registry
}

// Setup builds the providers. Shutdown flushes them.
func Setup(ctx context.Context, cfg Config) (*Providers, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(cfg.ServiceName),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}

	ratio := cfg.ReadRatio
	if ratio == 0 {
		ratio = DefaultReadRatio
	}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(NewSampler(ratio))}
	switch {
	case cfg.SpanExporter != nil:
		tpOpts = append(tpOpts, sdktrace.WithSyncer(cfg.SpanExporter))
	case cfg.OTLPEndpoint != "":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint)}
		if cfg.OTLPInsecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}

	return &Providers{
		Tracer:     sdktrace.NewTracerProvider(tpOpts...),
		Meter:      sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exporter)),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Registry:   reg,
	}, nil
}

// MetricsHandler serves the Prometheus exposition of the providers' metrics.
func (p *Providers) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(p.Registry, promhttp.HandlerOpts{})
}

// Shutdown flushes pending spans and stops the providers.
func (p *Providers) Shutdown(ctx context.Context) error {
	return errors.Join(p.Tracer.Shutdown(ctx), p.Meter.Shutdown(ctx))
}

// NewLogger returns a slog logger writing to w at the named level ("debug",
// "info", "warn", "error") in the named format ("json" for machines, "text"
// for people).
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", format)
}
