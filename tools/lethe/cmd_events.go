package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

const eventsHelp = `
Usage: lethe events tail [flags]

Follows the platform's event stream (JetStream stream LETHE) with an
ephemeral consumer and prints each event decoded: directives (erasure,
rectification, access requested), limits (consent withdrawn, objection,
restriction), configuration events, and the outcomes systems report.
Nothing is acknowledged or changed: tailing never takes an event from a
system.

Examples:
  lethe events tail                         # everything new, all tenants
  lethe events tail --tenant clio --since 1h
  lethe events tail --tenant cleura --all -o json | jq .
  lethe events tail --count 5               # stop after five events

The NATS URL comes from --nats-url or the context (default lethe dev's
nats://127.0.0.1:4222).
`

func runEvents(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "tail" {
		return subcommand("events", eventsHelp, nil, args, stdout, stderr)
	}
	var conn connFlags
	var tenant string
	var since time.Duration
	var all bool
	var count int
	fs := newFlagSet("events tail", eventsHelp, stderr)
	conn.register(fs)
	conn.registerOutput(fs)
	fs.StringVar(&tenant, "tenant", "", "only this tenant's events (default all)")
	fs.DurationVar(&since, "since", 0, "start this long ago (default: only new events)")
	fs.BoolVar(&all, "all", false, "start from the first event the stream keeps")
	fs.IntVar(&count, "count", 0, "stop after this many events (default: follow until Ctrl-C)")
	if code := parse(fs, args[1:]); code >= 0 {
		return code
	}
	cfg, err := conn.resolve()
	if err != nil {
		fmt.Fprintln(stderr, "lethe events tail:", err)
		return exitUsage
	}
	// Following is meant to outlive a restart of the platform: the
	// connection retries for ever instead of giving up after two minutes.
	nc, err := dialNATS(cfg, "lethe events tail", nats.MaxReconnects(-1))
	if err != nil {
		fmt.Fprintf(stderr, "lethe events tail: connect to %s: %v\n", cfg.NATS, err)
		return exitPlatform
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(stderr, "lethe events tail:", err)
		return exitPlatform
	}
	ctx, stop := signalContext()
	defer stop()

	filter := contract.AllSubjects
	if tenant != "" {
		filter = contract.SubjectRoot + "." + tenant + ".>"
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case all:
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
	case since > 0:
		start := time.Now().Add(-since)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	t := follower{js: js, config: cc, stderr: stderr}
	for seen := 0; count == 0 || seen < count; seen++ {
		msg, err := t.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			fmt.Fprintln(stderr, "lethe events tail:", err)
			return exitPlatform
		}
		printEvent(stdout, msg, conn.output == "json")
	}
	return exitOK
}

// follower follows the stream with an ordered consumer, and starts a new one
// after the last event it returned when the server goes away (a restart of
// lethe dev, a NATS node's rolling update), so that following survives it
// without a gap or a repeat.
type follower struct {
	js      jetstream.JetStream
	config  jetstream.OrderedConsumerConfig
	stderr  io.Writer
	cons    jetstream.Consumer
	lastSeq uint64 // stream sequence of the last event returned
}

// next returns the next event, waiting for one and riding out the
// server's absence until ctx ends. Only a refusal that retrying cannot
// change (no such stream, no permission) is returned as an error.
func (t *follower) next(ctx context.Context) (jetstream.Msg, error) {
	interrupted := false
	for ctx.Err() == nil {
		if t.cons == nil {
			cc := t.config
			if t.lastSeq > 0 {
				cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = jetstream.DeliverByStartSequencePolicy, t.lastSeq+1, nil
			}
			cons, err := t.js.OrderedConsumer(ctx, contract.StreamName, cc)
			if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAuthorization) {
				return nil, err
			}
			if err != nil {
				interrupted = t.interrupted(interrupted, err)
				sleepCtx(ctx, time.Second)
				continue
			}
			t.cons = cons
		}
		msg, err := t.cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			interrupted = t.interrupted(interrupted, err)
			t.cons = nil
			continue
		}
		if meta, err := msg.Metadata(); err == nil {
			t.lastSeq = meta.Sequence.Stream
		}
		if interrupted {
			fmt.Fprintln(t.stderr, "lethe events tail: following again")
		}
		return msg, nil
	}
	return nil, ctx.Err()
}

// interrupted reports the first error of an interruption once.
func (t *follower) interrupted(already bool, err error) bool {
	if !already {
		fmt.Fprintf(t.stderr, "lethe events tail: %v; waiting for the platform to come back\n", err)
	}
	return true
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// dialNATS connects to the context's NATS server with its credentials and
// TLS settings.
func dialNATS(cfg contextConfig, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := append([]nats.Option{nats.Name(name)}, extra...)
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.TLS != nil {
		if cfg.TLS.CA != "" {
			opts = append(opts, nats.RootCAs(cfg.TLS.CA))
		}
		if cfg.TLS.Cert != "" {
			opts = append(opts, nats.ClientCert(cfg.TLS.Cert, cfg.TLS.Key))
		}
	}
	return nats.Connect(cfg.NATS, opts...)
}

// printEvent decodes an event or an outcome by its NATS subject.
func printEvent(w io.Writer, msg jetstream.Msg, asJSON bool) {
	if strings.HasPrefix(msg.Subject(), audit.AnchorSubjectPrefix+".") {
		// An audit anchor is JSON already (audit.Anchor).
		if asJSON {
			payload := msg.Data()
			if !json.Valid(payload) {
				payload = []byte("null")
			}
			fmt.Fprintf(w, "{\"natsSubject\":%q,\"payload\":%s}\n", msg.Subject(), payload)
			return
		}
		fmt.Fprintf(w, "%s  %s\n", msg.Subject(), msg.Data())
		return
	}
	var body proto.Message = &eventsv1.Event{}
	if _, _, ok := contract.ParseOutcomeSubject(msg.Subject()); ok {
		body = &eventsv1.Outcome{}
		if msg.Headers().Get(contract.HeaderType) == contract.OutcomeBatchType {
			body = &eventsv1.OutcomeBatch{}
		}
	}
	decodeErr := proto.Unmarshal(msg.Data(), body)
	h := msg.Headers()
	if asJSON {
		payload := []byte("null")
		if decodeErr == nil {
			payload, _ = protojson.Marshal(body)
		}
		fmt.Fprintf(w, "{\"natsSubject\":%q,\"ceId\":%q,\"ceType\":%q,\"ceSubject\":%q,\"ceTime\":%q,\"payload\":%s}\n",
			msg.Subject(), h.Get(contract.HeaderID), h.Get(contract.HeaderType), h.Get(contract.HeaderCloudEventsSubject), h.Get(contract.HeaderTime), payload)
		return
	}
	summary := "(undecodable payload)"
	if decodeErr == nil {
		summary = protojson.MarshalOptions{}.Format(body)
		summary = strings.Join(strings.Fields(summary), " ")
	}
	fmt.Fprintf(w, "%s  %s  %s  %s\n", orDash(h.Get(contract.HeaderTime)), msg.Subject(), orDash(h.Get(contract.HeaderCloudEventsSubject)), summary)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
