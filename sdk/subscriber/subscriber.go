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
	DefaultWorkers = 8
	// DefaultPrefetch is how many events per worker each consumer fetches
	// ahead of the workers (see Run). With the default AckWait of 30 s, a
	// handler that takes under AckWait/DefaultPrefetch (3.75 s) on average
	// never lets a buffered event's AckWait run out.
	DefaultPrefetch   = 8
	DefaultMaxDeliver = 10
	DefaultAckWait    = 30 * time.Second
	DefaultHeartbeat  = 5 * time.Second
)

// pullExpiry is how long one pull request waits at the server; a
// heartbeat must be at most half of it and at least minHeartbeat (nats.go's
// rules).
const (
	pullExpiry   = 30 * time.Second
	minHeartbeat = 500 * time.Millisecond
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
	// permission to read the LETHE stream's info, create, read and pull
	// from its consumers (contract.KindConsumerName, one per kind it
	// answers, each created with its filter in the request subject) and
	// publish on its outcome subjects. The shipped NATS configuration
	// gives each system and tenant such a user, "<system>@<tenant>",
	// which may receive replies only under the inbox prefix
	// "_INBOX.<system>@<tenant>": connect with
	//
	//	nats.Connect(url, nats.UserInfo("newsletter@clio", password),
	//		nats.CustomInboxPrefix("_INBOX.newsletter@clio"),
	//		nats.MaxReconnects(-1), nats.PingInterval(10*time.Second))
	//
	// The ping interval decides how soon the connection notices that its
	// NATS node was cut off from the cluster (two missed pings); the
	// client's default of two minutes leaves the system idle for four.
	JetStream jetstream.JetStream
	// Ledger remembers the outcomes given, so that duplicates are answered
	// without calling a handler twice. Its retention must be at least the
	// stream's max age; Run checks.
	Ledger *ledger.Ledger
	// Handlers maps each event kind the system answers to its handler:
	// the kinds of contract.Directives and contract.Limits. Each kind has
	// its own durable consumer, filtered to that kind's subject, which
	// every instance answering the kind reads; an instance reads only the
	// consumers of the kinds it has handlers for, so instances of two
	// versions may answer different kinds while a rollout is under way.
	// A kind that no instance answers any more keeps its consumer (and its
	// growing backlog) until an operator deletes it.
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
	// entry for later ones. When empty: 1s, 5s, 30s, 2m, 10m. Each delay
	// is jittered: drawn evenly between half of it and all of it, so
	// that events that failed together do not all come back at once.
	BackOff []time.Duration
	// AckWait is how long the server waits for an answer before it
	// redelivers an event, for example after a crash; DefaultAckWait when
	// zero. A handler that runs longer is not redelivered meanwhile: the
	// subscriber tells the server it is still working. Events fetched
	// ahead (Prefetch) are not yet handled, and their AckWait runs while
	// they wait: keep Prefetch times a handler's average time well under
	// AckWait, or a buffered event is delivered again, counting one more
	// delivery towards MaxDeliver.
	AckWait time.Duration
	// Prefetch is how many events per worker each consumer fetches ahead
	// of the workers; DefaultPrefetch when zero. Fetching ahead keeps the
	// workers busy while the broker answers a pull one stored message at
	// a time; a system whose handlers take seconds (a SaaS API behind a
	// rate limit) sets 1, or a longer AckWait.
	Prefetch int
	// WaitCheck is how often events a handler answers later
	// ([AnswerLater]) are checked against their deadline, and reported
	// FAILED once it has passed; DefaultWaitCheck when zero.
	WaitCheck time.Duration
	// Heartbeat is how often the server confirms a waiting pull request;
	// DefaultHeartbeat when zero, from 500 ms to 15 s. Two missed heartbeats mean
	// the request was lost (the NATS node holding the consumer died while
	// the connection, on another node, stayed up): the subscriber pulls
	// again, so events resume at most twice this after the consumer has a
	// node again.
	Heartbeat time.Duration

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
	cfg       Config
	consumers []kindConsumer
	log       *slog.Logger
	tracer    trace.Tracer
	locks     subjectLocks
	outcomes  *outcomePublisher
	// recording counts the outcomes being recorded off the workers
	// (record), for Run to wait on.
	recording sync.WaitGroup
}

// kindConsumer is the durable consumer of one kind of event.
type kindConsumer struct {
	kind   contract.Kind
	name   string
	filter string
}

// New checks cfg, fills in its defaults and returns a Subscriber. It does
// not touch the network; Run does.
func New(cfg Config) (*Subscriber, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	consumers, err := cfg.kindConsumers()
	if err != nil {
		return nil, err
	}
	for _, d := range cfg.BackOff {
		if d <= 0 {
			return nil, fmt.Errorf("subscriber: BackOff delays must be positive, got %s", d)
		}
	}
	cfg = cfg.withDefaults()
	return &Subscriber{
		cfg:       cfg,
		consumers: consumers,
		log:       cfg.Logger.With("system", cfg.SystemID, "tenant", cfg.Tenant),
		tracer:    cfg.TracerProvider.Tracer("github.com/lethe-privacy/lethe/sdk/subscriber"),
		outcomes:  &outcomePublisher{js: cfg.JetStream, system: cfg.SystemID},
	}, nil
}

// check reports the first of cfg's required fields that is missing or
// setting that is out of range.
func (cfg *Config) check() error {
	if _, err := contract.ConsumerName(cfg.SystemID, cfg.Tenant); err != nil {
		return fmt.Errorf("subscriber: %w", err)
	}
	switch {
	case cfg.JetStream == nil:
		return errors.New("subscriber: JetStream is required")
	case cfg.Ledger == nil:
		return errors.New("subscriber: Ledger is required")
	case len(cfg.Handlers) == 0:
		return errors.New("subscriber: no Handlers: register one for each kind the system answers")
	case cfg.Heartbeat != 0 && (cfg.Heartbeat < minHeartbeat || cfg.Heartbeat > pullExpiry/2):
		return fmt.Errorf("subscriber: Heartbeat (%s) must be from %s to %s", cfg.Heartbeat, minHeartbeat, pullExpiry/2)
	case cfg.Workers < 0, cfg.MaxDeliver < 0, cfg.AckWait < 0, cfg.WaitCheck < 0, cfg.Prefetch < 0:
		// A negative MaxDeliver would mean "deliver forever" to the
		// server: a poison event would never be reported.
		return fmt.Errorf("subscriber: Workers (%d), MaxDeliver (%d), AckWait (%s), WaitCheck (%s) and Prefetch (%d) must not be negative",
			cfg.Workers, cfg.MaxDeliver, cfg.AckWait, cfg.WaitCheck, cfg.Prefetch)
	}
	return nil
}

// kindConsumers returns the durable consumer of each kind cfg has a
// handler for, and an error for a nil handler or a kind no system answers.
func (cfg *Config) kindConsumers() ([]kindConsumer, error) {
	var consumers []kindConsumer
	// Walk the contract's kinds rather than the map so that consumers are
	// set up in the same order in every run.
	for _, kind := range slices.Concat(contract.Directives, contract.Limits) {
		h, ok := cfg.Handlers[kind]
		if !ok {
			continue
		}
		if h == nil {
			return nil, fmt.Errorf("subscriber: the handler of %s is nil", kind)
		}
		natsSubject, err := contract.KindSubject(cfg.Tenant, kind)
		if err != nil {
			return nil, fmt.Errorf("subscriber: %w", err)
		}
		name, err := contract.KindConsumerName(cfg.SystemID, cfg.Tenant, kind)
		if err != nil {
			return nil, fmt.Errorf("subscriber: %w", err)
		}
		consumers = append(consumers, kindConsumer{kind: kind, name: name, filter: natsSubject})
	}
	if len(consumers) != len(cfg.Handlers) {
		for kind := range cfg.Handlers {
			if !slices.Contains(contract.Directives, kind) && !slices.Contains(contract.Limits, kind) {
				return nil, fmt.Errorf("subscriber: %q is not a directive or limit a system answers", kind)
			}
		}
	}
	return consumers, nil
}

// withDefaults returns cfg with every zero setting given its default, and
// BackOff copied so the caller's slice is not shared.
func (cfg Config) withDefaults() Config {
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = DefaultMaxDeliver
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = DefaultPrefetch
	}
	if len(cfg.BackOff) == 0 {
		cfg.BackOff = defaultBackOff
	}
	cfg.BackOff = slices.Clone(cfg.BackOff)
	if cfg.WaitCheck == 0 {
		cfg.WaitCheck = DefaultWaitCheck
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
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
	return cfg
}

// ConsumerName returns the name of the durable consumer that delivers
// events of kind, or "" when the subscriber has no handler for kind.
func (s *Subscriber) ConsumerName(kind contract.Kind) string {
	for _, c := range s.consumers {
		if c.kind == kind {
			return c.name
		}
	}
	return ""
}

// ConsumerNames returns the names of the subscriber's durable consumers,
// one per kind it answers.
func (s *Subscriber) ConsumerNames() []string {
	names := make([]string, len(s.consumers))
	for i, c := range s.consumers {
		names[i] = c.name
	}
	return names
}

// stopped returns nil when ctx ended, err otherwise.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Run creates or updates the system's consumers and handles events until
// ctx ends. It then stops taking events, waits for the handlers running to
// return (their context is cancelled) and for the outcomes being published
// to be stored, hands back events fetched but not started, and returns
// nil. It returns an error if a consumer cannot be
// set up or stops delivering, for example because it was deleted; running
// it again resumes where the consumers stand.
func (s *Subscriber) Run(ctx context.Context) error {
	// A stop during set-up is a stop, not a failure.
	if err := s.checkRetention(ctx); err != nil {
		return stopped(ctx, err)
	}
	// Each consumer keeps up to Prefetch events per worker fetched ahead.
	// A pull is answered one stored message at a time, each read waiting
	// for the stream's store lock, which every fsync of a store holds:
	// under load a pull took tens of milliseconds, so a consumer that kept
	// only a few events in hand (a share of the workers, as before) was
	// held to a few hundred events a second with its workers idle
	// (BenchmarkErasures, flows/dsar). A fetched event's AckWait runs
	// while it waits in the buffer; a worker is free again as soon as the
	// handler has returned (recording and publishing run off the
	// workers), so it waits about Prefetch handler runs at most.
	perConsumer := s.cfg.Prefetch * s.cfg.Workers
	iters := make([]jetstream.MessagesContext, 0, len(s.consumers))
	for _, c := range s.consumers {
		cons, err := s.cfg.JetStream.CreateOrUpdateConsumer(ctx, contract.StreamName, s.consumerConfig(c))
		if err == nil {
			var msgs jetstream.MessagesContext
			msgs, err = cons.Messages(jetstream.PullMaxMessages(perConsumer),
				jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(s.cfg.Heartbeat))
			if err == nil {
				iters = append(iters, msgs)
				continue
			}
			err = fmt.Errorf("subscriber: consume %s: %w", c.name, err)
		} else {
			err = fmt.Errorf("subscriber: create consumer %s: %w", c.name, err)
		}
		handBackAll(iters)
		return stopped(ctx, err)
	}
	s.log.Info("subscribed", "consumers", s.ConsumerNames())

	work, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	// One fetcher per consumer hands events to whichever worker is free;
	// the channel is unbuffered, so an event waits in its consumer's
	// buffer, where handBack can return it, rather than in the channel.
	deliveries := make(chan jetstream.Msg)
	var fetchers, workers sync.WaitGroup
	for i, msgs := range iters {
		name := s.consumers[i].name
		fetchers.Go(func() {
			for {
				msg, err := msgs.Next(jetstream.NextContext(work))
				if errors.Is(err, jetstream.ErrNoHeartbeat) && work.Err() == nil {
					// The iterator has dropped the lost pull and asks
					// again; the consumer is still there.
					s.log.Warn("no heartbeat from the consumer's server; pulling again", "consumer", name)
					continue
				}
				if err != nil {
					if work.Err() == nil {
						stop(fmt.Errorf("subscriber: consumer %s: %w", name, err))
					}
					return
				}
				select {
				case deliveries <- msg:
				case <-work.Done():
					_ = msg.Nak() // another instance may take it now
					return
				}
			}
		})
	}
	workers.Go(func() { s.sweep(work) })
	workers.Go(func() { s.expireWaiting(work) })
	for range s.cfg.Workers {
		workers.Go(func() {
			for {
				select {
				case <-work.Done():
					return
				case msg := <-deliveries:
					s.process(work, msg)
				}
			}
		})
	}
	fetchers.Wait()
	workers.Wait()
	// Outcomes handed over are recorded, then stored (or fail) within
	// publishTimeout; their events are acknowledged (or given back)
	// before Run returns.
	s.recording.Wait()
	s.outcomes.wait()
	handBackAll(iters)
	if ctx.Err() != nil {
		return nil
	}
	return context.Cause(work)
}

// consumerConfig is the system's durable consumer of one kind. Its single
// filter subject travels in the creation request's subject, where NATS
// permissions check it.
func (s *Subscriber) consumerConfig(c kindConsumer) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       c.name,
		Description:   fmt.Sprintf("Lethe %s events for system %s, tenant %s", c.kind, s.cfg.SystemID, s.cfg.Tenant),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    s.cfg.MaxDeliver,
		FilterSubject: c.filter,
		// The server's BackOff is not used: it delays only redeliveries
		// after an AckWait expired, not NAKs, and it replaces AckWait, so
		// a handler still at work would see its event redelivered after
		// the first, short delay. NAKs carry the back-off instead.
		Metadata: map[string]string{
			contract.MetadataSystem: s.cfg.SystemID,
			contract.MetadataTenant: s.cfg.Tenant,
			contract.MetadataKind:   string(c.kind),
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

// handBackAll hands back the events of every consumer, at once.
func handBackAll(iters []jetstream.MessagesContext) {
	var wg sync.WaitGroup
	for _, msgs := range iters {
		wg.Go(func() { handBack(msgs) })
	}
	wg.Wait()
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
