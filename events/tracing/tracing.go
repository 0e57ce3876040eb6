// Package tracing sets up the OpenTelemetry tracer provider of a troupe process — a service
// command (events/serve), `troupe dev`'s services, the CLI — exporting spans over OTLP when an
// endpoint is given by --otlp-endpoint or by OpenTelemetry's own environment variables, and
// nothing at all when neither is: then there is no provider, and the events package starts no
// spans (see events.Tracing for what the spans are).
package tracing

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/events"
)

// The environment variables of OpenTelemetry's OTLP exporter that this package reads itself; the
// exporters read the others (headers, certificates, timeout, compression), the SDK the batch
// processor's (OTEL_BSP_*) and the sampler's (OTEL_TRACES_SAMPLER).
const (
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// The OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL); ProtocolHTTP is the default, as
// OpenTelemetry's specification says.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Options say where a process sends its spans.
type Options struct {
	// Endpoint is the OTLP receiver (an OpenTelemetry Collector, Jaeger, Tempo): a URL as
	// OTEL_EXPORTER_OTLP_ENDPOINT takes it — http://host:4318 (http/protobuf; the path, if any,
	// is where /v1/traces goes under) or, with OTEL_EXPORTER_OTLP_PROTOCOL=grpc, http://host:4317
	// — or host:port, which means http://host:port. http is plaintext, https TLS. Default: the
	// environment's endpoint; with none, nothing is exported.
	Endpoint string
}

// BindFlags adds --otlp-endpoint to fs.
func (o *Options) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Endpoint, "otlp-endpoint", "", "send OpenTelemetry traces to this OTLP receiver: http://host:4318, or with OTEL_EXPORTER_OTLP_PROTOCOL=grpc http://host:4317 (default: $"+EnvTracesEndpoint+" or $"+EnvEndpoint+"; none: no tracing)")
}

// Enabled reports whether spans are exported: an endpoint given by Endpoint or by the
// environment.
func (o Options) Enabled() bool {
	return o.Endpoint != "" || os.Getenv(EnvTracesEndpoint) != "" || os.Getenv(EnvEndpoint) != ""
}

// Provider is the tracer provider of one service (or the CLI) of a process.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// New returns the provider of service (the resource's service.name is "troupe-<service>", its
// service.version this build's; OTEL_RESOURCE_ATTRIBUTES adds to them): spans go through a batch
// processor to an OTLP exporter of the protocol OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or
// OTEL_EXPORTER_OTLP_PROTOCOL names (http/protobuf by default, or grpc). When o is not Enabled it
// returns a Provider whose TracerProvider is nil, at no cost. Nothing is dialled yet: an
// endpoint that does not answer costs the spans sent to it, never the work they trace. Call
// Shutdown before the process exits.
func New(ctx context.Context, o Options, service string) (*Provider, error) {
	if !o.Enabled() {
		return &Provider{}, nil
	}
	exp, err := exporter(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName("troupe-"+service), semconv.ServiceVersion(events.Version()), semconv.ServiceNamespace("troupe")))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return &Provider{sdk: sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))}, nil
}

// TracerProvider is the provider, for events.SubscriberConfig and events.StartSpan; nil when
// tracing is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil || p.sdk == nil {
		return nil
	}
	return p.sdk
}

// Shutdown exports the spans not exported yet and stops the provider; it waits until they are
// sent or ctx ends. Nothing to do when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.sdk == nil {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: export the last spans: %w", err)
	}
	return nil
}

// exporter is the OTLP span exporter o and the environment say: the protocol from the
// environment, the endpoint from o (the environment's when o names none: the exporters read it).
func exporter(ctx context.Context, o Options) (sdktrace.SpanExporter, error) {
	protocol := cmp.Or(os.Getenv(EnvTracesProtocol), os.Getenv(EnvProtocol), ProtocolHTTP)
	var target *url.URL
	if o.Endpoint != "" {
		raw := o.Endpoint
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("--otlp-endpoint %q: want http(s)://host:port or host:port", o.Endpoint)
		}
		target = u
	}
	switch protocol {
	case ProtocolHTTP:
		var opts []otlptracehttp.Option
		if target != nil {
			opts = append(opts, otlptracehttp.WithEndpoint(target.Host), otlptracehttp.WithURLPath(path.Join("/", target.Path, "v1/traces")))
			if target.Scheme == "http" {
				opts = append(opts, otlptracehttp.WithInsecure())
			}
		}
		return otlptracehttp.New(ctx, opts...)
	case ProtocolGRPC:
		var opts []otlptracegrpc.Option
		if target != nil {
			opts = append(opts, otlptracegrpc.WithEndpoint(target.Host))
			if target.Scheme == "http" {
				opts = append(opts, otlptracegrpc.WithInsecure())
			}
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	return nil, fmt.Errorf("OTLP protocol %q (%s): want %s or %s", protocol, EnvProtocol, ProtocolHTTP, ProtocolGRPC)
}
