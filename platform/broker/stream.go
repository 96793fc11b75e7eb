package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/sdk/contract"
)

// ErrInvalidStreamConfig is wrapped by every error that [StreamConfig.Validate]
// returns, so that callers can tell a configuration mistake from a broker
// that is unavailable.
var ErrInvalidStreamConfig = errors.New("broker: invalid stream config")

// StreamConfig describes the JetStream stream that carries Lethe's events.
// Storage is always file-based with limits retention: every registered
// system reads the stream through its own durable consumer, so an event must
// stay until it ages out rather than until some consumer acknowledges it.
type StreamConfig struct {
	// Name is the stream's name.
	Name string
	// Subjects are the NATS subjects the stream captures.
	Subjects []string
	// MaxAge is how long the stream keeps an event. Required: the stream's
	// age is bounded, so that personal data in events (pseudonymous
	// subject ids) does not outlive its purpose. Subscribers' durable
	// de-duplication by event id must remember ids at least this long,
	// since a redelivery can arrive for as long as the event exists.
	MaxAge time.Duration
	// Duplicates is the window in which the server drops a second publish
	// with the same Nats-Msg-Id. Required, and at most MaxAge.
	Duplicates time.Duration
	// Replicas is the number of copies in a cluster; 0 means 1.
	Replicas int
	// MaxBytes caps the stream's size; zero or less means no cap. When the
	// cap is reached the oldest events are discarded, possibly before a
	// slow system has consumed them (task tracking then re-sends
	// unanswered directives), so size it for MaxAge to be the limit that
	// binds.
	MaxBytes int64
	// ErasureLedgerMaxAge is how long the erasure ledger
	// ([EnsureErasureLedger]) keeps an erasure directive. Required, and at
	// least MaxAge. A system restored from a backup replays the erasures
	// made since the backup was taken, so the ledger must reach back as
	// far as the oldest backup any system may restore.
	ErasureLedgerMaxAge time.Duration
	// ConsentStateMaxAge is how long the consent replication stream
	// (EnsureConsentReplication) keeps an entry;
	// DefaultConsentStateMaxAge when zero.
	ConsentStateMaxAge time.Duration
}

// DefaultErasureLedgerMaxAge is how long the erasure ledger keeps a
// directive by default: a year of backups, the longest retention of
// backups commonly kept, and a month's margin for the restore itself.
const DefaultErasureLedgerMaxAge = 400 * 24 * time.Hour

// DefaultStreamConfig returns the platform stream: "LETHE", capturing every
// subject under [SubjectPrefix], keeping events 30 days, single replica,
// with an erasure ledger that keeps erasure directives 400 days.
func DefaultStreamConfig() StreamConfig {
	return StreamConfig{
		Name:     "LETHE",
		Subjects: []string{SubjectPrefix + ".>"},
		// Thirty days lets a system that was down for weeks catch up.
		// Subscribers must de-duplicate event ids for at least this
		// long.
		MaxAge: 30 * 24 * time.Hour,
		// The outbox relay re-publishes an entry whose acknowledgement it
		// did not see with the same Nats-Msg-Id (the event id), so the
		// window must exceed the longest gap between a relay's attempts,
		// crash and restart included; ten minutes is far beyond that.
		// Past the window the server stores the duplicate and consumers
		// drop it by event id.
		Duplicates:          10 * time.Minute,
		Replicas:            1,
		ErasureLedgerMaxAge: DefaultErasureLedgerMaxAge,
	}
}

// Validate reports the first problem in c, wrapping [ErrInvalidStreamConfig].
// The server checks the rest (name characters, subject syntax, replica
// limits).
func (c StreamConfig) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: name is empty", ErrInvalidStreamConfig)
	case len(c.Subjects) == 0:
		return fmt.Errorf("%w: stream %q captures no subjects", ErrInvalidStreamConfig, c.Name)
	case c.MaxAge <= 0:
		// Zero would mean "keep forever" to the server.
		return fmt.Errorf("%w: stream %q: MaxAge must be positive, got %s", ErrInvalidStreamConfig, c.Name, c.MaxAge)
	case c.Duplicates <= 0:
		// Zero would silently become the server's two-minute default,
		// shorter than the window the relay relies on.
		return fmt.Errorf("%w: stream %q: Duplicates must be positive, got %s", ErrInvalidStreamConfig, c.Name, c.Duplicates)
	case c.Duplicates > c.MaxAge:
		return fmt.Errorf("%w: stream %q: Duplicates (%s) exceeds MaxAge (%s)", ErrInvalidStreamConfig, c.Name, c.Duplicates, c.MaxAge)
	case c.Replicas < 0:
		return fmt.Errorf("%w: stream %q: Replicas must not be negative, got %d", ErrInvalidStreamConfig, c.Name, c.Replicas)
	case c.ErasureLedgerMaxAge < c.MaxAge:
		// Zero (and anything negative) lands here too: zero would mean
		// "keep forever" to the server, and the ledger holds subject ids.
		// Shorter than the platform stream, an erasure could leave the
		// ledger while a lagging system has yet to receive it.
		return fmt.Errorf("%w: stream %q: ErasureLedgerMaxAge (%s) must be at least MaxAge (%s)",
			ErrInvalidStreamConfig, c.Name, c.ErasureLedgerMaxAge, c.MaxAge)
	}
	for i, s := range c.Subjects {
		if s == "" {
			return fmt.Errorf("%w: stream %q: subject %d is empty", ErrInvalidStreamConfig, c.Name, i)
		}
	}
	return nil
}

// jetstream translates c into the server's configuration.
func (c StreamConfig) jetstream() jetstream.StreamConfig {
	replicas := c.Replicas
	if replicas == 0 {
		replicas = 1
	}
	maxBytes := c.MaxBytes
	if maxBytes <= 0 {
		maxBytes = -1 // the server's "unlimited"
	}
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "Lethe events",
		Subjects:    c.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      c.MaxAge,
		Duplicates:  c.Duplicates,
		Replicas:    replicas,
		MaxBytes:    maxBytes,
		// MaxMsgs and MaxMsgsPerSubject stay unlimited: age is the bound.
		MaxMsgs:           -1,
		MaxMsgsPerSubject: -1,
	}
}

// EnsureStream creates the stream described by cfg, or brings an existing
// one in line with it, and returns it; it provisions the stream's
// dead-letter stream (EnsureDeadLetterStream) and erasure ledger
// (EnsureErasureLedger) too. Every service calls it at start:
// with an unchanged configuration it changes nothing and returns no error.
//
// The stream's configuration is owned here: a setting cfg gives that was
// changed by hand (for example with the nats CLI) is reset, with the
// others in one update; a stream that has them all is not updated at all.
// Changes the server cannot
// apply in place, such as another storage type or persist mode, come back
// as errors instead of a recreated stream, since recreating it would drop
// its events.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stream, err := createOrUpdate(ctx, js, cfg.jetstream())
	if err != nil {
		return nil, fmt.Errorf("broker: ensure stream %q: %w", cfg.Name, err)
	}
	if _, err := EnsureDeadLetterStream(ctx, js, cfg); err != nil {
		return nil, err
	}
	if _, err := EnsureErasureLedger(ctx, js, cfg); err != nil {
		return nil, err
	}
	return stream, nil
}

// ensureAttempt bounds one provisioning request. A JetStream cluster
// leaves a request unanswered while it elects its meta leader, and may
// leave one unanswered that races another service's creation of the same
// stream (all services start together); asked again, it answers. Without
// a bound, one lost request would hold a starting service until its whole
// start-up deadline and stop it.
const ensureAttempt = 5 * time.Second

// createOrUpdate provisions cfg, asking again while the cluster does not
// answer or says it is not available yet, until ctx ends. A stream that
// already has cfg's settings is left alone: every service provisions the
// same streams at every start, and nats-server 2.15 races (in its own
// memory, as the race detector shows) when one stream is updated while
// another that sources it is validated, which concurrent no-op updates
// from services starting together did.
func createOrUpdate(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	for {
		attempt, cancel := context.WithTimeout(ctx, ensureAttempt)
		stream, err := js.Stream(attempt, cfg.Name)
		switch {
		case err == nil && provisioned(stream.CachedInfo().Config, cfg):
		case err == nil:
			stream, err = js.UpdateStream(attempt, cfg)
		case errors.Is(err, jetstream.ErrStreamNotFound):
			stream, err = js.CreateStream(attempt, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// Another service created it meanwhile: look again,
				// rather than update what it may still be setting up.
				cancel()
				continue
			}
		}
		cancel()
		if err == nil || ctx.Err() != nil || !unsettled(err) {
			return stream, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// provisioned reports whether a stream configured as have already has
// every setting want gives; a zero number in want is the server's default,
// which have then holds in its own spelling.
func provisioned(have, want jetstream.StreamConfig) bool {
	number := func(have, want int64) bool { return want == 0 || have == want }
	sources := func(have, want []*jetstream.StreamSource) bool {
		return slices.EqualFunc(have, want, func(h, w *jetstream.StreamSource) bool {
			return h.Name == w.Name && h.FilterSubject == w.FilterSubject
		})
	}
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Discard == want.Discard && have.Storage == want.Storage &&
		number(int64(have.MaxAge), int64(want.MaxAge)) && number(int64(have.Duplicates), int64(want.Duplicates)) &&
		number(int64(have.Replicas), int64(want.Replicas)) && number(have.MaxBytes, want.MaxBytes) &&
		number(have.MaxMsgs, want.MaxMsgs) && number(have.MaxMsgsPerSubject, want.MaxMsgsPerSubject) &&
		sources(have.Sources, want.Sources)
}

// unsettled reports whether err is what a cluster that is not ready yet
// answers: nothing within the attempt, no responders, or "temporarily
// unavailable" (503).
func unsettled(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || (errors.As(err, &api) && api.Code == http.StatusServiceUnavailable)
}

// DeadLetterStreamName names the stream that keeps the MAX_DELIVERIES
// advisories of the platform stream's consumers.
func DeadLetterStreamName(platform string) string { return platform + "_DEAD_LETTERS" }

// DeadLetterSubject is the advisory JetStream publishes when a consumer of
// the named stream gives up on a message after MaxDeliver deliveries; the
// last token is the consumer.
func DeadLetterSubject(platform string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + platform + ".*"
}

// EnsureDeadLetterStream provisions the stream that captures the platform
// stream's MAX_DELIVERIES advisories. JetStream publishes an advisory once,
// on core NATS: without a stream, a task tracker that is down at that
// moment would never learn that a system gave up on an event, and the task
// would wait forever instead of failing where operators see it.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name := DeadLetterStreamName(cfg.Name)
	stream, err := createOrUpdate(ctx, js, jetstream.StreamConfig{
		Name:        name,
		Description: "MAX_DELIVERIES advisories of the " + cfg.Name + " stream's consumers",
		Subjects:    []string{DeadLetterSubject(cfg.Name)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      cfg.MaxAge,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: ensure stream %q: %w", name, err)
	}
	return stream, nil
}

// ErasureLedgerStreamName names the stream that keeps the platform
// stream's erasure directives: "LETHE_ERASURES" (contract.ErasureLedgerStream).
func ErasureLedgerStreamName(platform string) string { return platform + "_ERASURES" }

// ErasureLedgerFilter is the NATS subject filter of the erasure directives of
// every tenant, which the erasure ledger copies from the platform stream.
const ErasureLedgerFilter = SubjectPrefix + ".*." + string(contract.KindErasureRequested)

// EnsureErasureLedger provisions the erasure ledger: a stream that sources
// the platform stream's erasure directives ([ErasureLedgerFilter]) and
// keeps them [StreamConfig.ErasureLedgerMaxAge], long after the platform
// stream let them go.
//
// Lethe does not erase a system's data itself: a system erases when its
// durable consumer delivers the directive, and its consumer then moves
// on. A system that restores its database from a backup taken before an
// erasure has the subject's data back and nothing left to deliver the
// erasure again. The ledger is what it replays instead
// (sdk/subscriber.Subscriber.ReplayErasures).
//
// The server copies the directives itself, as they are stored, so the
// ledger needs no publisher and misses none: a directive the ledger did
// not copy while it was unreachable is copied when it is back, from where
// it stopped, for as long as the platform stream still holds it. Its
// duplicate window is the platform stream's, so an outbox re-publish that
// the platform stream dropped is not copied twice either. It holds what
// the directives hold (pseudonymous subject ids, causes, scopes) and
// nothing more; no subject of its own, so nothing is published to it.
func EnsureErasureLedger(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	name := ErasureLedgerStreamName(cfg.Name)
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = 1
	}
	stream, err := createOrUpdate(ctx, js, jetstream.StreamConfig{
		Name:        name,
		Description: "Erasure directives of the " + cfg.Name + " stream, replayed by systems restored from a backup",
		Sources: []*jetstream.StreamSource{{
			Name:          cfg.Name,
			FilterSubject: ErasureLedgerFilter,
		}},
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		Storage:    jetstream.FileStorage,
		MaxAge:     cfg.ErasureLedgerMaxAge,
		Duplicates: cfg.Duplicates,
		Replicas:   replicas,
		// Age is the bound, as on the platform stream: a size cap would
		// drop the oldest erasures first, the ones the oldest backups
		// need.
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("broker: ensure stream %q: %w", name, err)
	}
	return stream, nil
}
