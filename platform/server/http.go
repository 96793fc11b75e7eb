package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/protobuf/proto"
)

// The HTTP/JSON face of the server (docs/design.md § HTTP/JSON).
//
// A vanguard transcoder sits in front of the same *grpc.Server that serves
// the gRPC listener: it turns a Connect-protocol call (POST
// /lethe.consent.v1.ConsentService/Check with a JSON body, or GET for a
// method free of side effects) into a gRPC call in protobuf and hands it to
// grpc.Server.ServeHTTP. Every call therefore runs the same interceptor
// chain and the same handlers as a gRPC call, and carries the caller's TLS
// state and headers (Authorization) to the authentication slot: there is
// no second implementation of anything.

const (
	// maxHTTPMessage bounds a request body as grpc-go bounds a received
	// message by default (4 MiB), so that a call is refused at the same
	// size on both listeners. The transcoder buffers at most this much.
	maxHTTPMessage = 4 << 20
	// httpReadHeaderTimeout bounds how long a client may take to send its
	// headers, so that slow clients cannot hold connections open.
	httpReadHeaderTimeout = 10 * time.Second
	// httpReadTimeout bounds reading a whole request: a unary call's body
	// is at most maxHTTPMessage.
	httpReadTimeout = time.Minute
	// httpIdleTimeout closes kept-alive connections nobody uses.
	httpIdleTimeout = 2 * time.Minute
)

// httpHandler returns the transcoder for every service registered on s.
// It is built when the server runs, after the services are registered.
func (s *Server) httpHandler() (http.Handler, error) {
	// Only protobuf reaches the gRPC server: its codec (requestCodec) is
	// forced for every call, so the transcoder must convert JSON itself.
	transcoder, err := vanguardgrpc.NewTranscoder(s.grpc,
		vanguard.WithDefaultServiceOptions(
			vanguard.WithTargetCodecs(vanguard.CodecProto),
			vanguard.WithMaxMessageBufferBytes(maxHTTPMessage),
		),
		vanguard.WithCodec(func(res vanguard.TypeResolver) vanguard.Codec {
			return requestJSON{vanguard.NewJSONCodec(res)}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("http transcoder: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The transcoder's buffer limit applies to a decoded message; the
		// body itself is bounded here, compressed or not.
		r.Body = http.MaxBytesReader(w, r.Body, maxHTTPMessage+1024)
		// The Connect protocol asks unary clients to send this header, and
		// the transcoder takes a POST without it for REST, which no method
		// is mapped to (the protos carry no google.api.http rules). So a
		// plain `curl -H 'Content-Type: application/json'` is a Connect
		// call: nothing else could be meant.
		if r.Method == http.MethodPost && r.Header.Get("Connect-Protocol-Version") == "" {
			r.Header.Set("Connect-Protocol-Version", "1")
		}
		transcoder.ServeHTTP(w, r)
	}), nil
}

// requestJSON is the transcoder's JSON codec (protojson field names,
// unknown fields discarded as the gRPC codec discards them, every field
// written in answers) with one change: a request body that is not JSON of
// the request message is the caller's mistake, InvalidArgument (400), where
// the transcoder would answer Unknown (500) and page an operator.
type requestJSON struct{ *vanguard.JSONCodec }

func (c requestJSON) Unmarshal(data []byte, msg proto.Message) error {
	if err := c.JSONCodec.Unmarshal(data, msg); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("the body is not JSON of %s: %w", msg.ProtoReflect().Descriptor().FullName(), err))
	}
	return nil
}

// httpTLS is the listener's TLS configuration for HTTP: the gRPC
// listener's (same certificate, same client CAs, reloaded the same way),
// offering HTTP/2 and HTTP/1.1, since curl and browsers speak either.
func httpTLS(base *tls.Config) *tls.Config {
	c := base.Clone()
	inner := c.GetConfigForClient
	c.NextProtos = []string{"h2", "http/1.1"}
	if inner != nil {
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			conf, err := inner(hello)
			if conf != nil {
				conf.NextProtos = []string{"h2", "http/1.1"}
			}
			return conf, err
		}
	}
	return c
}

// startHTTP serves the HTTP/JSON face on the configured listener or
// address; it returns nil when neither is set.
func (s *Server) startHTTP() (*http.Server, error) {
	cfg := s.cfg
	lis := cfg.HTTPListener
	if lis == nil && cfg.HTTPAddr == "" {
		return nil, nil
	}
	handler, err := s.httpHandler()
	if err != nil {
		return nil, err
	}
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPAddr, err)
		}
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// Failed handshakes and malformed requests are the caller's; they
		// go to the log at debug level rather than to standard error.
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	if cfg.serverTLS != nil {
		srv.TLSConfig = httpTLS(cfg.serverTLS)
		go func() { _ = srv.ServeTLS(lis, "", "") }()
	} else {
		go func() { _ = srv.Serve(lis) }()
	}
	cfg.Logger.Info("HTTP/JSON endpoint (Connect protocol)", "addr", lis.Addr().String(), "tls", cfg.serverTLS != nil)
	return srv, nil
}

// stopHTTP stops accepting HTTP calls and waits for those in flight until
// ctx ends, then closes what remains. It runs before the gRPC server's
// GracefulStop, which would cancel them.
func stopHTTP(ctx context.Context, srv *http.Server) {
	if srv == nil {
		return
	}
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		_ = srv.Close()
	}
}
