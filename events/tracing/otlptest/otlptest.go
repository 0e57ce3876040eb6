// Package otlptest is an in-process OTLP trace receiver for tests: what an OpenTelemetry
// Collector, Jaeger or Tempo is to a troupe process, over OTLP/HTTP (protobuf) or OTLP/gRPC,
// implementing the collector's trace service (go.opentelemetry.io/proto/otlp). It keeps every
// span it is sent, with the service.name of the resource that sent it.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Receiver receives spans until its test ends.
type Receiver struct {
	// Endpoint is where to send spans: http://127.0.0.1:<port>, as --otlp-endpoint or
	// OTEL_EXPORTER_OTLP_ENDPOINT take it (the OTLP/HTTP receiver serves /v1/traces under it).
	Endpoint string

	mu    sync.Mutex
	spans []Span
}

// Span is one span received.
type Span struct {
	// Service is the service.name of the resource that sent it.
	Service string
	*tracepb.Span
}

// TraceID is the span's trace id, in hex.
func (s Span) TraceID() string { return hex.EncodeToString(s.Span.GetTraceId()) }

// ID is the span's id, in hex.
func (s Span) ID() string { return hex.EncodeToString(s.Span.GetSpanId()) }

// ParentID is the id of the span's parent, in hex; "" for the root of a trace.
func (s Span) ParentID() string { return hex.EncodeToString(s.Span.GetParentSpanId()) }

// Attr is the span's attribute key as a string (an integer in decimal, a bool as true or false);
// "" when the span has none of that key.
func (s Span) Attr(key string) string {
	for _, kv := range s.Span.GetAttributes() {
		if kv.GetKey() == key {
			return str(kv.GetValue())
		}
	}
	return ""
}

func str(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	}
	return ""
}

// Spans returns the spans received so far, in the order they arrived.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// export keeps the spans of req.
func (r *Receiver) export(req *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = str(kv.GetValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.spans = append(r.spans, Span{Service: service, Span: sp})
			}
		}
	}
}

// HTTP starts an OTLP/HTTP receiver (binary protobuf, gzip or not) on a free loopback port.
func HTTP(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var in coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.export(&in)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})
	ln := listen(t)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.Endpoint = "http://" + ln.Addr().String()
	return r
}

// GRPC starts an OTLP/gRPC receiver (plaintext) on a free loopback port.
func GRPC(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, traceService{r: r})
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	r.Endpoint = "http://" + ln.Addr().String()
	return r
}

type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	r *Receiver
}

func (s traceService) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.r.export(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otlptest: listen: %v", err)
	}
	return ln
}
