package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
)

// LevelTrace is the slog level of nats-server protocol traces. The server
// traces every protocol line it handles, message payloads included, and
// Lethe's payloads carry pseudonymous subject ids; so tracing is on only
// when the handler enables this level, below Debug, explicitly.
const LevelTrace = slog.LevelDebug - 4

// serverLogger implements server.Logger over slog. nats-server formats its
// messages printf-style, so each becomes the record's message.
type serverLogger struct {
	log   *slog.Logger
	debug bool // whether the handler wants Debugf; read once at start
	trace bool // whether the handler wants Tracef; read once at start

	mu    sync.Mutex
	fatal error // the first Fatalf, reported by StartEmbedded
}

var _ server.Logger = (*serverLogger)(nil)

func newServerLogger(log *slog.Logger) *serverLogger {
	ctx := context.Background()
	return &serverLogger{
		log:   log,
		debug: log.Enabled(ctx, slog.LevelDebug),
		trace: log.Enabled(ctx, LevelTrace),
	}
}

func (l *serverLogger) logf(level slog.Level, format string, v []any) {
	ctx := context.Background()
	// The server calls Noticef and friends on hot paths; format only
	// what the handler keeps.
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, v...))
}

// Noticef logs at Info: nats-server notices are its normal lifecycle
// messages (listening, ready, shutting down).
func (l *serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelInfo, format, v) }

// Warnf logs at Warn.
func (l *serverLogger) Warnf(format string, v ...any) { l.logf(slog.LevelWarn, format, v) }

// Errorf logs at Error.
func (l *serverLogger) Errorf(format string, v ...any) { l.logf(slog.LevelError, format, v) }

// Debugf logs at Debug.
func (l *serverLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Tracef logs at LevelTrace.
func (l *serverLogger) Tracef(format string, v ...any) { l.logf(LevelTrace, format, v) }

// Fatalf logs at Error and remembers the failure. nats-server's own logger
// exits the process here; an embedded server must not take its host down,
// so StartEmbedded turns a fatal error during startup into an error.
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, slog.Bool("fatal", true))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal == nil {
		l.fatal = errors.New(msg)
	}
}

func (l *serverLogger) fatalErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}
