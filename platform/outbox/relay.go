package outbox

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"

	"github.com/lethe-privacy/lethe/platform/store"
)

// RelayConfig tunes a Relay.
type RelayConfig struct {
	// Window is how many publishes may await their acknowledgement at
	// once. JetStream with SyncAlways acknowledges a publish after an
	// fsync, so waiting for each ack before the next publish would cap the
	// relay at one event per fsync; a window keeps the server's write path
	// full. Default 1024.
	Window int
	// AckTimeout is how long a publish may wait for its acknowledgement
	// before it counts as failed and is retried. Default 5s.
	AckTimeout time.Duration
	// RetryBackoff is the first pause after a failed round; it doubles up
	// to MaxRetryBackoff while failures continue. Defaults 100ms and 5s.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// PollInterval is how often the relay looks for entries when no commit
	// woke it (entries left by a crashed run are found at start). Default 1s.
	PollInterval time.Duration
}

func (c *RelayConfig) defaults() {
	if c.Window <= 0 {
		c.Window = 1024
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.MaxRetryBackoff < c.RetryBackoff {
		c.MaxRetryBackoff = max(5*time.Second, c.RetryBackoff)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
}

// Relay publishes an Outbox's entries to JetStream.
type Relay struct {
	outbox    *Outbox
	js        jetstream.JetStream
	cfg       RelayConfig
	published metric.Int64Counter
	failed    metric.Int64Counter
}

// NewRelay returns a relay for o over the connection nc. It makes its own
// JetStream context, because the window and the ack timeout are properties
// of the context's asynchronous publisher.
func NewRelay(o *Outbox, nc *nats.Conn, cfg RelayConfig) (*Relay, error) {
	cfg.defaults()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.Window),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout),
	)
	if err != nil {
		return nil, err
	}
	published, err := o.cfg.Meter.Int64Counter("lethe.outbox.published",
		metric.WithDescription("Events published and acknowledged by JetStream."))
	if err != nil {
		return nil, err
	}
	failed, err := o.cfg.Meter.Int64Counter("lethe.outbox.publish_failures",
		metric.WithDescription("Publishes that failed or timed out and will be retried."))
	if err != nil {
		return nil, err
	}
	return &Relay{outbox: o, js: js, cfg: cfg, published: published, failed: failed}, nil
}

// Run publishes until ctx ends. It keeps going through broker outages,
// backing off between failed rounds, and catches up when the broker
// returns.
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.RetryBackoff
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	for {
		n, err := r.flush(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			r.outbox.cfg.Logger.Warn("outbox relay: publishing failed, retrying", "error", err, "backlog", r.outbox.Depth(), "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, r.cfg.MaxRetryBackoff)
		case n > 0:
			backoff = r.cfg.RetryBackoff // more may be waiting: go again at once
		default:
			select {
			case <-ctx.Done():
				return nil
			case <-r.outbox.wake:
			case <-poll.C:
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pending is one publish awaiting its acknowledgement, and the keys of
// the entries it carries.
type pending struct {
	keys   [][]byte
	future jetstream.PubAckFuture
}

// maxBatchBytes bounds the payload of one batch message, far below the
// server's default maximum payload (1 MiB).
const maxBatchBytes = 256 << 10

// message returns the message that publishes entries[0] and how many
// entries it carries: an event alone, or the messages staged with
// AddMessageTx that follow one another on the same NATS subject, up to
// maxBatchBytes, as one batch (HeaderBatch). JetStream acknowledges a
// message after an fsync with SyncAlways, so a message per entry caps a
// stream of small state messages at one per fsync.
func message(entries []entry) (*nats.Msg, int) {
	first := entries[0]
	msg := &nats.Msg{Subject: first.natsSubject, Header: make(nats.Header, len(first.headers))}
	for k, v := range first.headers {
		msg.Header[k] = []string{v}
	}
	if first.headers[HeaderBatch] == "" {
		msg.Data = first.payload
		return msg, 1
	}
	n, size := 0, 0
	for _, e := range entries {
		if e.headers[HeaderBatch] == "" || e.natsSubject != first.natsSubject || (n > 0 && size+len(e.payload)+binary.MaxVarintLen64 > maxBatchBytes) {
			break
		}
		msg.Data = binary.AppendUvarint(msg.Data, uint64(len(e.payload)))
		msg.Data = append(msg.Data, e.payload...)
		size = len(msg.Data)
		n++
	}
	msg.Header.Set(HeaderBatch, fmt.Sprint(n))
	if n > 1 {
		// Another grouping after a failed publish gets another id: the
		// stream may then hold an entry twice, which state messages'
		// readers skip by their own order (a revision).
		msg.Header.Set(nats.MsgIdHdr, first.headers[nats.MsgIdHdr]+"+"+entries[n-1].headers[nats.MsgIdHdr])
	}
	return msg, n
}

// flush publishes up to one window of entries, oldest first, waits for
// their acknowledgements, and deletes the acknowledged entries in one
// transaction. It returns how many it deleted and the first failure.
func (r *Relay) flush(ctx context.Context) (int, error) {
	entries, keys, err := r.read()
	if err != nil || len(entries) == 0 {
		return 0, err
	}
	inflight := make([]pending, 0, len(entries))
	var firstErr error
	for i := 0; i < len(entries); {
		msg, n := message(entries[i:])
		future, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			firstErr = fmt.Errorf("publish %s: %w", msg.Header.Get(nats.MsgIdHdr), err)
			break // the connection is likely down: wait for what is in flight, retry the rest later
		}
		inflight = append(inflight, pending{keys: keys[i : i+n], future: future})
		i += n
	}

	acked := make([][]byte, 0, len(inflight))
	for _, p := range inflight {
		select {
		case <-p.future.Ok():
			acked = append(acked, p.keys...)
		case err := <-p.future.Err():
			if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if failed := len(entries) - len(acked); failed > 0 {
		r.failed.Add(ctx, int64(failed))
	}
	if len(acked) == 0 {
		return 0, firstErr
	}
	if err := r.outbox.db.Update(func(tx *bolt.Tx) error {
		b := store.BucketTx(tx, store.BucketOutbox)
		for _, k := range acked {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return 0, errors.Join(firstErr, fmt.Errorf("delete published entries: %w", err))
	}
	r.outbox.depth.Add(-int64(len(acked)))
	r.published.Add(ctx, int64(len(acked)))
	return len(acked), firstErr
}

// read returns up to one window of the oldest entries and their keys.
func (r *Relay) read() ([]entry, [][]byte, error) {
	var entries []entry
	var keys [][]byte
	err := r.outbox.db.View(func(tx *bolt.Tx) error {
		c := store.BucketTx(tx, store.BucketOutbox).Cursor()
		for k, v := c.First(); k != nil && len(entries) < r.cfg.Window; k, v = c.Next() {
			e, err := decodeEntry(v)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", store.KeyUint64(k), err)
			}
			entries = append(entries, e)
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	return entries, keys, err
}
