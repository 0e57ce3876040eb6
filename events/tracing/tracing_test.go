package tracing_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events/tracing"
	"github.com/troupe-dev/troupe/events/tracing/otlptest"
)

// clearEnv unsets OpenTelemetry's OTLP variables for the test (an empty value counts as unset).
func clearEnv(t *testing.T) {
	for _, k := range []string{tracing.EnvEndpoint, tracing.EnvTracesEndpoint, tracing.EnvProtocol, tracing.EnvTracesProtocol} {
		t.Setenv(k, "")
	}
}

// TestExportsOverOTLP: a provider sends its spans, with its service's name, to the receiver the
// flag or OpenTelemetry's environment names, over the protocol the environment names
// (http/protobuf by default); Shutdown sends what is left.
func TestExportsOverOTLP(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grpc  bool
		setup func(t *testing.T, r *otlptest.Receiver) tracing.Options
	}{
		{name: "flag, http/protobuf by default", setup: func(t *testing.T, r *otlptest.Receiver) tracing.Options {
			return tracing.Options{Endpoint: r.Endpoint}
		}},
		{name: "flag host:port, grpc from OTEL_EXPORTER_OTLP_PROTOCOL", grpc: true, setup: func(t *testing.T, r *otlptest.Receiver) tracing.Options {
			t.Setenv(tracing.EnvProtocol, tracing.ProtocolGRPC)
			return tracing.Options{Endpoint: strings.TrimPrefix(r.Endpoint, "http://")}
		}},
		{name: "OTEL_EXPORTER_OTLP_ENDPOINT alone", setup: func(t *testing.T, r *otlptest.Receiver) tracing.Options {
			t.Setenv(tracing.EnvEndpoint, r.Endpoint)
			return tracing.Options{}
		}},
		{name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and _TRACES_PROTOCOL grpc", grpc: true, setup: func(t *testing.T, r *otlptest.Receiver) tracing.Options {
			t.Setenv(tracing.EnvTracesEndpoint, r.Endpoint)
			t.Setenv(tracing.EnvTracesProtocol, tracing.ProtocolGRPC)
			return tracing.Options{}
		}},
		{name: "the flag wins over the environment", setup: func(t *testing.T, r *otlptest.Receiver) tracing.Options {
			t.Setenv(tracing.EnvEndpoint, "http://127.0.0.1:1") // nobody there
			return tracing.Options{Endpoint: r.Endpoint}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			r := otlptest.HTTP(t)
			if tc.grpc {
				r = otlptest.GRPC(t)
			}
			o := tc.setup(t, r)
			require.True(t, o.Enabled())
			p, err := tracing.New(t.Context(), o, "test")
			require.NoError(t, err)
			tp := p.TracerProvider()
			require.NotNil(t, tp)
			_, span := tp.Tracer("test").Start(t.Context(), "work")
			span.End()
			require.NoError(t, p.Shutdown(t.Context()))

			spans := r.Spans()
			require.Len(t, spans, 1)
			assert.Equal(t, "work", spans[0].Name)
			assert.Equal(t, "troupe-test", spans[0].Service)
			assert.Equal(t, span.SpanContext().TraceID().String(), spans[0].TraceID())
		})
	}
}

// TestOffWithoutEndpoint: with no endpoint, by flag or environment, there is no provider at all,
// and Shutdown has nothing to do.
func TestOffWithoutEndpoint(t *testing.T) {
	clearEnv(t)
	o := tracing.Options{}
	assert.False(t, o.Enabled())
	p, err := tracing.New(t.Context(), o, "test")
	require.NoError(t, err)
	assert.Nil(t, p.TracerProvider())
	assert.NoError(t, p.Shutdown(t.Context()))
}

// TestBadSettings: an endpoint that is no http(s) URL nor host:port, or a protocol Go's OTLP
// exporters do not speak, is an error saying which.
func TestBadSettings(t *testing.T) {
	clearEnv(t)
	_, err := tracing.New(t.Context(), tracing.Options{Endpoint: "ftp://collector:4318"}, "test")
	assert.ErrorContains(t, err, "--otlp-endpoint")
	t.Setenv(tracing.EnvProtocol, "http/json")
	_, err = tracing.New(t.Context(), tracing.Options{Endpoint: "collector:4318"}, "test")
	assert.ErrorContains(t, err, `"http/json"`)
}
