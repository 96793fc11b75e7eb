package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/timerange"
)

// Parking: an item the applier or the sweep cannot handle is set aside,
// not retried for ever.
//
// The applier folds thousands of signals in one transaction, and a sweep
// fires up to a thousand subjects in one; a single item whose handling
// fails (a signal dated outside any sane time, which cannot be stored; a
// subject record that no longer decodes) would roll back its whole
// transaction at every attempt, and with it every other tenant's purges,
// for good. So the failing item is parked: moved, as it was stored and
// with the error, to bucketParked in retention.db, counted in the
// lethe.retention.parked metric and logged with its key, and everything
// else goes on. Nothing is lost: an operator finds the item under its
// tenant and subject and decides what to do with it.

// Kinds of parked items, the kind label of lethe.retention.parked.
const (
	parkedSignal  = "signal"
	parkedSubject = "subject"
)

// factTime returns the time a fact reports, or an error if it is not a
// valid timestamp within the platform's window (package timerange). The
// gRPC edge refuses such a time already; the domain checks again because
// facts also arrive over NATS and from files written before the edge did,
// and it never computes with, stores or formats such a time: before 1970
// the scheduler's keys cannot say it (store.TimeKey), and beyond year 9999
// it cannot even be stored.
func factTime(ts *timestamppb.Timestamp) (time.Time, error) {
	if why := timerange.CheckTimestamp(ts); why != "" {
		return time.Time{}, fmt.Errorf("%d seconds since 1970: %s", ts.GetSeconds(), why)
	}
	return ts.AsTime(), nil
}

// parkedItem is a parked item as bucketParked holds it.
type parkedItem struct {
	// Kind is parkedSignal or parkedSubject.
	Kind string `json:"kind"`
	// Error says why it was parked.
	Error string `json:"error"`
	// At is when it was parked.
	At time.Time `json:"at"`
	// Entry is the item as it was stored: the journal entry (tenant NUL
	// signal), or the subject's scheduler payload.
	Entry []byte `json:"entry"`
}

// parkedKey is the key of a parked item.
func parkedKey(tenant, subject, kind, id string) []byte {
	return store.Key(tenant, subject, kind, id)
}

// parkTx sets an item aside in tx and, once tx commits, counts and logs
// it.
func (s *Service) parkTx(tx *bolt.Tx, key []byte, kind string, entry []byte, cause error) error {
	v, err := json.Marshal(parkedItem{Kind: kind, Error: cause.Error(), At: s.Clock.Now(), Entry: entry})
	if err != nil {
		return err
	}
	if err := store.BucketTx(tx, bucketParked).Put(key, v); err != nil {
		return err
	}
	tx.OnCommit(func() {
		s.metrics.parked.Add(context.Background(), 1, metric.WithAttributes(attribute.String("kind", kind)))
		s.Logger.Error("retention: parked an item that cannot be handled; the others go on",
			"kind", kind, "key", fmt.Sprintf("%q", key), "bucket", string(bucketParked), "error", cause)
	})
	return nil
}

// parkSubjectTx moves a subject's scheduler item, which the sweep could
// not handle, to bucketParked: it is no longer tracked, so no sweep,
// rescan or preview reaches it again.
func (s *Service) parkSubjectTx(tx *bolt.Tx, key []byte, cause error) error {
	_, payload, ok, err := s.scheduler.GetTx(tx, key)
	if err != nil || !ok {
		return err
	}
	tenant, subject, err := splitSubjectKey(key)
	if err != nil {
		tenant, subject = "", fmt.Sprintf("%x", key)
	}
	if err := s.parkTx(tx, parkedKey(tenant, subject, parkedSubject, ""), parkedSubject, payload, cause); err != nil {
		return err
	}
	return s.scheduler.CancelTx(tx, key)
}
