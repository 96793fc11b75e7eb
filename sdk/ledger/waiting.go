package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Wait remembers ev as acknowledged without an outcome: the system took it
// and will answer later, by the deadline until. The event itself is kept,
// because its stream message is acknowledged and gone; [Ledger.Waiting]
// returns it when the answer comes, [Ledger.Overdue] once until has
// passed. An event that already has an outcome is not waiting, and one
// already waiting keeps its first deadline, so that a redelivery does not
// postpone it.
func (l *Ledger) Wait(ev *eventsv1.Event, until time.Time) error {
	if ev.GetId() == "" {
		return errors.New("ledger: the event has no id")
	}
	payload, err := contract.Marshal(ev)
	if err != nil {
		return fmt.Errorf("ledger: encode event %s: %w", ev.GetId(), err)
	}
	id := []byte(ev.GetId())
	err = l.db.Update(func(tx *bbolt.Tx) error {
		if bucketsOf(tx).outcomes.Get(id) != nil {
			return nil
		}
		w := waitingOf(tx)
		if w.Get(id) != nil {
			return nil
		}
		return w.Put(id, append(binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano())), payload...))
	})
	if err != nil {
		return fmt.Errorf("ledger: wait for event %s: %w", ev.GetId(), err)
	}
	return nil
}

// Waiting returns the event eventID and its deadline if it is waiting for
// its answer (see [Ledger.Wait]).
func (l *Ledger) Waiting(eventID string) (ev *eventsv1.Event, until time.Time, found bool, err error) {
	err = l.db.View(func(tx *bbolt.Tx) error {
		v := waitingOf(tx).Get([]byte(eventID))
		if v == nil {
			return nil
		}
		found = true
		ev, until, err = decodeWaiting(v)
		return err
	})
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("ledger: look up waiting event %s: %w", eventID, err)
	}
	return ev, until, found, nil
}

// Done forgets that eventID is waiting: its outcome is recorded and
// published. Done on an event that is not waiting does nothing.
func (l *Ledger) Done(eventID string) error {
	if err := l.db.Update(func(tx *bbolt.Tx) error { return waitingOf(tx).Delete([]byte(eventID)) }); err != nil {
		return fmt.Errorf("ledger: end the wait for event %s: %w", eventID, err)
	}
	return nil
}

// Overdue returns up to limit waiting events whose deadline is before
// now. Few events wait at a time, so the bucket is scanned rather than
// indexed by deadline.
func (l *Ledger) Overdue(now time.Time, limit int) ([]*eventsv1.Event, error) {
	var out []*eventsv1.Event
	err := l.db.View(func(tx *bbolt.Tx) error {
		return waitingOf(tx).ForEach(func(k, v []byte) error {
			if len(out) >= limit {
				return nil
			}
			ev, until, err := decodeWaiting(v)
			if err != nil {
				// A poison entry must not keep the others from their
				// deadline; it is reported by Waiting if asked for.
				return nil
			}
			if until.Before(now) {
				out = append(out, ev)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: list overdue events: %w", err)
	}
	return out, nil
}

// waitingOf returns the waiting bucket in tx; New created it.
func waitingOf(tx *bbolt.Tx) *bbolt.Bucket { return tx.Bucket(bucketRoot).Bucket(bucketWaiting) }

// decodeWaiting decodes a waiting entry: deadline | Event.
func decodeWaiting(v []byte) (*eventsv1.Event, time.Time, error) {
	if len(v) < 8 {
		return nil, time.Time{}, fmt.Errorf("waiting entry has %d bytes, want at least 8", len(v))
	}
	until := time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])))
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(v[8:], ev); err != nil {
		return nil, time.Time{}, fmt.Errorf("decode event: %w", err)
	}
	return ev, until, nil
}
