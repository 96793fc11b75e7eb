package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
)

// Handler acts on one event and reports what the system did. A returned
// error means "transient, try again later": the event is delivered again
// after a back-off, and once it has been delivered MaxDeliver times the
// subscriber reports it FAILED with the error's text. Report failures that
// retrying cannot fix as [Failed] instead.
//
// A handler may be called again for an event it already handled, when the
// subscriber stopped between the handler's change and its record of the
// outcome; make the change and [Event.Record] in one transaction to rule
// that out.
type Handler func(ctx context.Context, ev *Event) (Outcome, error)

// Defaults of the Config fields left zero.
const (
	DefaultWorkers    = 8
	DefaultMaxDeliver = 10
	DefaultAckWait    = 30 * time.Second
)

// defaultBackOff spreads ten deliveries over about fifty minutes: quick
// retries for a blip, then room for a dependency to come back.
var defaultBackOff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}

// sweepEvery is how often Run deletes expired ledger entries.
const sweepEvery = time.Hour

// Config configures a Subscriber.
type Config struct {
	// SystemID is the system's id in Lethe's registry: a lower-case
	// token. It names the system's outcome subject and consumer.
	SystemID string
	// Tenant is the tenant whose events the system receives, or
	// contract.AllTenants ("*") for every tenant.
	Tenant string
	// JetStream is the connection to Lethe's NATS. The system needs
	// permission to read the LETHE stream's info, create and read its
	// consumer (contract.ConsumerName) and publish on its outcome
	// subjects.
	JetStream jetstream.JetStream
	// Ledger remembers the outcomes given, so that duplicates are answered
	// without calling a handler twice. Its retention must be at least the
	// stream's max age; Run checks.
	Ledger *ledger.Ledger
	// Handlers maps each event kind the system answers to its handler:
	// the kinds of contract.Directives and contract.Limits. The system's
	// consumer receives only these kinds. Every instance of a system must
	// register the same kinds: each one sets the consumer's filter.
	Handlers map[contract.Kind]Handler
	// Identifiers fetches a subject's identifiers for Event.Identifiers;
	// optional.
	Identifiers IdentifierFetcher

	// Workers is how many events are handled at once; DefaultWorkers when
	// zero. Within a process, events about one subject are handled one at
	// a time. Instances in other processes may handle the same subject at
	// the same moment; a handler that records with Event.Record still acts
	// once per event and never over a newer restriction event.
	Workers int
	// MaxDeliver is how often an event is delivered before the subscriber
	// gives up and reports it FAILED; DefaultMaxDeliver when zero.
	MaxDeliver int
	// BackOff is the delay before redelivering an event whose handler
	// returned an error: BackOff[n-1] after the n-th delivery, the last
	// entry for later ones. When empty: 1s, 5s, 30s, 2m, 10m.
	BackOff []time.Duration
	// AckWait is how long the server waits for an answer before it
	// redelivers an event, for example after a crash; DefaultAckWait when
	// zero. A handler that runs longer is not redelivered meanwhile: the
	// subscriber tells the server it is still working.
	AckWait time.Duration

	// Logger receives the subscriber's logs; slog.Default() when nil. The
	// subscriber never logs subject ids.
	Logger *slog.Logger
	// Propagator reads the trace context an event carries, so that a
	// handler joins the trace of the request that caused the event, and
	// writes it into outcomes; W3C trace context when nil.
	Propagator propagation.TextMapPropagator
	// TracerProvider traces each event's processing; the global provider
	// when nil (which traces nothing unless the program installed one).
	TracerProvider trace.TracerProvider
}

// Subscriber receives a system's Lethe events from its durable JetStream
// consumer, hands each to its handler once, and reports the outcome.
type Subscriber struct {
	cfg      Config
	consumer string
	filters  []string
	log      *slog.Logger
	tracer   trace.Tracer
	locks    subjectLocks
}

// New checks cfg, fills in its defaults and returns a Subscriber. It does
// not touch the network; Run does.
func New(cfg Config) (*Subscriber, error) {
	consumer, err := contract.ConsumerName(cfg.SystemID, cfg.Tenant)
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	switch {
	case cfg.JetStream == nil:
		return nil, errors.New("subscriber: JetStream is required")
	case cfg.Ledger == nil:
		return nil, errors.New("subscriber: Ledger is required")
	case len(cfg.Handlers) == 0:
		return nil, errors.New("subscriber: no Handlers: register one for each kind the system answers")
	case cfg.Workers < 0, cfg.MaxDeliver < 0, cfg.AckWait < 0:
		// A negative MaxDeliver would mean "deliver forever" to the
		// server: a poison event would never be reported.
		return nil, fmt.Errorf("subscriber: Workers (%d), MaxDeliver (%d) and AckWait (%s) must not be negative",
			cfg.Workers, cfg.MaxDeliver, cfg.AckWait)
	}
	var filters []string
	// Walk the contract's kinds rather than the map so that the filter
	// does not change order between runs.
	for _, kind := range slices.Concat(contract.Directives, contract.Limits) {
		h, ok := cfg.Handlers[kind]
		if !ok {
			continue
		}
		if h == nil {
			return nil, fmt.Errorf("subscriber: the handler of %s is nil", kind)
		}
		subject, err := contract.KindSubject(cfg.Tenant, kind)
		if err != nil {
			return nil, fmt.Errorf("subscriber: %w", err)
		}
		filters = append(filters, subject)
	}
	if len(filters) != len(cfg.Handlers) {
		for kind := range cfg.Handlers {
			if !slices.Contains(contract.Directives, kind) && !slices.Contains(contract.Limits, kind) {
				return nil, fmt.Errorf("subscriber: %q is not a directive or limit a system answers", kind)
			}
		}
	}
	for _, d := range cfg.BackOff {
		if d <= 0 {
			return nil, fmt.Errorf("subscriber: BackOff delays must be positive, got %s", d)
		}
	}

	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if len(cfg.BackOff) == 0 {
		cfg.BackOff = defaultBackOff
	}
	cfg.BackOff = slices.Clone(cfg.BackOff)
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	return &Subscriber{
		cfg:      cfg,
		consumer: consumer,
		filters:  filters,
		log:      cfg.Logger.With("system", cfg.SystemID, "tenant", cfg.Tenant),
		tracer:   cfg.TracerProvider.Tracer("github.com/lethe-privacy/lethe/sdk/subscriber"),
	}, nil
}

// ConsumerName returns the name of the system's durable consumer.
func (s *Subscriber) ConsumerName() string { return s.consumer }

// stopped returns nil when ctx ended, err otherwise.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Run creates or updates the system's consumer and handles events until
// ctx ends. It then stops taking events, waits for the handlers running to
// return (their context is cancelled), hands back events fetched but not
// started, and returns nil. It returns an error if the consumer cannot be
// set up or stops delivering, for example because it was deleted; running
// it again resumes where the consumer stands.
func (s *Subscriber) Run(ctx context.Context) error {
	// A stop during set-up is a stop, not a failure.
	if err := s.checkRetention(ctx); err != nil {
		return stopped(ctx, err)
	}
	cons, err := s.cfg.JetStream.CreateOrUpdateConsumer(ctx, contract.StreamName, s.consumerConfig())
	if err != nil {
		return stopped(ctx, fmt.Errorf("subscriber: create consumer %s: %w", s.consumer, err))
	}
	// Fetch no more than the workers can start: a fetched event's AckWait
	// runs while it waits in the buffer.
	msgs, err := cons.Messages(jetstream.PullMaxMessages(s.cfg.Workers))
	if err != nil {
		return stopped(ctx, fmt.Errorf("subscriber: consume %s: %w", s.consumer, err))
	}
	s.log.Info("subscribed", "consumer", s.consumer, "subjects", s.filters)

	work, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var wg sync.WaitGroup
	wg.Go(func() { s.sweep(work) })
	for range s.cfg.Workers {
		wg.Go(func() {
			for {
				// Next serialises concurrent callers; each worker
				// takes the next event when it is free.
				msg, err := msgs.Next(jetstream.NextContext(work))
				if err != nil {
					if work.Err() == nil {
						stop(fmt.Errorf("subscriber: consumer %s: %w", s.consumer, err))
					}
					return
				}
				s.process(work, msg)
			}
		})
	}
	wg.Wait()
	handBack(msgs)
	if ctx.Err() != nil {
		return nil
	}
	return context.Cause(work)
}

// consumerConfig is the system's durable consumer.
func (s *Subscriber) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        s.consumer,
		Description:    fmt.Sprintf("Lethe events for system %s, tenant %s", s.cfg.SystemID, s.cfg.Tenant),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        s.cfg.AckWait,
		MaxDeliver:     s.cfg.MaxDeliver,
		FilterSubjects: s.filters,
		// The server's BackOff is not used: it delays only redeliveries
		// after an AckWait expired, not NAKs, and it replaces AckWait, so
		// a handler still at work would see its event redelivered after
		// the first, short delay. NAKs carry the back-off instead.
		Metadata: map[string]string{
			contract.MetadataSystem: s.cfg.SystemID,
			contract.MetadataTenant: s.cfg.Tenant,
		},
	}
}

// checkRetention refuses a ledger that forgets event ids before the stream
// forgets the events: a redelivery after that would be acted on again.
func (s *Subscriber) checkRetention(ctx context.Context) error {
	stream, err := s.cfg.JetStream.Stream(ctx, contract.StreamName)
	if err != nil {
		return fmt.Errorf("subscriber: stream %s: %w", contract.StreamName, err)
	}
	maxAge, retention := stream.CachedInfo().Config.MaxAge, s.cfg.Ledger.Retention()
	switch {
	case maxAge == 0:
		return fmt.Errorf("subscriber: stream %s keeps events forever, the ledger only %s: set the stream's max age", contract.StreamName, retention)
	case maxAge > retention:
		return fmt.Errorf("subscriber: stream %s keeps events %s, longer than the ledger's retention of %s", contract.StreamName, maxAge, retention)
	}
	return nil
}

// sweep deletes expired ledger entries now and every sweepEvery until ctx
// ends.
func (s *Subscriber) sweep(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		n, err := s.cfg.Ledger.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("sweeping the ledger failed", "error", err)
		case n > 0:
			s.log.Debug("swept the ledger", "expired", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// handBack returns the events fetched but not started to the server, so
// that another instance gets them now instead of after their AckWait.
func handBack(msgs jetstream.MessagesContext) {
	msgs.Drain()
	for {
		// Bounded in case the connection is gone and the drain cannot
		// finish.
		msg, err := msgs.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			msgs.Stop()
			return
		}
		_ = msg.Nak() // if it is lost, AckWait redelivers the event anyway
	}
}
