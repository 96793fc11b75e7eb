package broker

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// reconnectWait is the pause between attempts to reach a server, the NATS
// client's own default: short enough that the outbox relay resumes within
// seconds of a broker restart, long enough that a fleet of services does
// not hammer a cluster that is coming back (the client adds jitter).
const reconnectWait = 2 * time.Second

// pingInterval is how often the client asks the server whether the
// connection still carries anything; two unanswered pings
// (maxPingsOut) count it dead and start a reconnect to another node. The
// client's default, two minutes, left a service on a NATS node cut off
// from the cluster for four: the topology test's partition saw consent and
// DSAR publish nothing for its whole 30 s while connected to the node cut
// off. Ten seconds bounds that to about twenty, for one small frame per
// connection every ten seconds.
const (
	pingInterval = 10 * time.Second
	maxPingsOut  = 2
)

// Connect opens a NATS connection named clientName (the name shows in the
// server's connection listings) that never gives up: it reconnects without
// limit, and if no server answers yet it returns a connection that keeps
// trying in the background, so a service can start while NATS is still
// coming up. Publishes made while disconnected are buffered by the client
// up to its reconnect buffer; JetStream publishes wait for their
// acknowledgement and time out instead, which the outbox relay retries.
//
// url may list several servers separated by commas. Connection events are
// logged through logger (nil means slog.Default()) with any credentials in
// the URL removed. opts are applied after Lethe's defaults and override
// them.
func Connect(url, clientName string, logger *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.Default()
	}
	log := logger.With(slog.String("component", "nats"), slog.String("client", clientName))
	defaults := []nats.Option{
		nats.Name(clientName),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("connected to NATS", slog.String("url", redactURLs(nc.ConnectedUrl())),
				slog.String("server", nc.ConnectedServerName()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				// A disconnect without an error is our own Close.
				log.Info("disconnected from NATS")
				return
			}
			log.Warn("disconnected from NATS; reconnecting", slog.Any("error", err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", slog.String("url", redactURLs(nc.ConnectedUrl())),
				slog.String("server", nc.ConnectedServerName()))
		}),
		// Every failed attempt, every reconnectWait, for as long as the
		// outage lasts: Debug, since the disconnect was logged at Warn.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("NATS reconnect attempt failed", slog.Any("error", err))
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Error("NATS connection closed", slog.Any("error", err))
				return
			}
			log.Info("NATS connection closed")
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Info("NATS server entering lame duck mode; will move to another server",
				slog.String("server", nc.ConnectedServerName()))
		}),
		// Asynchronous errors: slow consumers, permission violations.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{slog.Any("error", err)}
			if sub != nil {
				attrs = append(attrs, slog.String("nats_subject", sub.Subject))
			}
			log.Error("NATS asynchronous error", attrs...)
		}),
	}
	nc, err := nats.Connect(url, append(defaults, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("broker: connect to NATS at %s: %w", redactURLs(url), err)
	}
	if !nc.IsConnected() {
		// Only the first failure is worth a warning; the attempts that
		// follow log at Debug.
		attrs := []any{slog.String("url", redactURLs(url))}
		if err := nc.LastError(); err != nil {
			attrs = append(attrs, slog.Any("error", err))
		}
		log.Warn("NATS not reachable yet; retrying in the background", attrs...)
	}
	return nc, nil
}

// redactURLs removes the user information (user and password, token, or
// nkey seed) from a comma-separated list of server URLs, so that it can be
// logged. An entry that does not parse is replaced whole, since it may
// still hold a secret.
func redactURLs(urls string) string {
	if urls == "" {
		return ""
	}
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			// nats.go accepts "host:port"; such an entry cannot hold
			// user information unless it has an "@".
			if strings.Contains(p, "@") {
				p = "redacted@" + p[strings.LastIndex(p, "@")+1:]
			}
			parts[i] = p
			continue
		}
		u, err := url.Parse(p)
		if err != nil {
			parts[i] = "<unparsable URL>"
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
