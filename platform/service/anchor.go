package service

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/audit"
)

const (
	// defaultAnchorEvery bounds what an anchor leaves uncovered: the
	// changes of the last minute, and of a service killed without a
	// clean stop since its last tick.
	defaultAnchorEvery = time.Minute

	// anchorRefresh is how long an unchanged head goes without being
	// published again, so that the platform stream, which drops messages
	// after 30 days (broker.DefaultStreamConfig), always holds an anchor of
	// every file with a chain, however quiet.
	anchorRefresh = 24 * time.Hour

	// anchorStopTimeout bounds the last publish at shutdown, after the
	// service's context ended.
	anchorStopTimeout = 5 * time.Second
)

// runAnchors publishes the head of each of the service's audit chains
// (audit.Anchor) on the platform stream and in the log: when Run starts,
// every anchorEvery when the head moved or went anchorRefresh without
// being published, and once more when ctx ends, so a clean stop leaves
// nothing uncovered. The head is read, not written, so the outbox is not
// involved: nothing is committed, and a publish that fails is retried at
// the next tick. Without NATS it only logs.
//
// An anchor proves what the chain held at the time; what it covers and
// what it does not is in docs/security.md § Audit log.
func (b *Base) runAnchors(ctx context.Context) {
	var js jetstream.JetStream
	if b.nats != nil {
		var err error
		if js, err = jetstream.New(b.nats); err != nil {
			b.Logger.Error("audit anchors: no JetStream context; anchors are only logged", "error", err)
			js = nil
		}
	}
	a := anchorer{base: b, js: js, logged: map[string]audit.Anchor{}, published: map[string]audit.Anchor{}}
	a.tick(ctx)
	t := time.NewTicker(b.anchorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), anchorStopTimeout)
			a.tick(stopCtx)
			cancel()
			return
		case <-t.C:
			a.tick(ctx)
		}
	}
}

// anchorer remembers, per file, the last head logged and the last one the
// stream acknowledged.
type anchorer struct {
	base      *Base
	js        jetstream.JetStream
	logged    map[string]audit.Anchor
	published map[string]audit.Anchor
}

func (a *anchorer) tick(ctx context.Context) {
	for _, db := range a.base.storeFiles() {
		var head audit.Anchor
		var ok bool
		err := db.View(func(tx *bolt.Tx) error {
			var err error
			head, ok, err = audit.HeadTx(tx, a.base.Clock.Now())
			return err
		})
		if err != nil {
			// A file's failure must not keep the others' heads from
			// being published.
			a.base.Logger.Error("audit anchors: read the chain head", "path", db.Path(), "error", err)
			continue
		}
		if !ok {
			continue
		}
		if due(a.logged[db.Path()], head) {
			a.base.Logger.Info(audit.AnchorLogMessage, "file", head.File, "seq", head.Seq, "hash", head.Hash)
			a.logged[db.Path()] = head
		}
		if a.js == nil || !due(a.published[db.Path()], head) {
			continue
		}
		if err := publishAnchor(ctx, a.js, head); err != nil {
			a.base.Logger.Warn("audit anchors: publish failed; retrying at the next tick", "file", head.File, "seq", head.Seq, "error", err)
			continue
		}
		a.published[db.Path()] = head
	}
}

// due reports whether head must be recorded again after last.
func due(last, head audit.Anchor) bool {
	return last.Seq != head.Seq || last.Hash != head.Hash || head.Time.Sub(last.Time) >= anchorRefresh
}

// publishAnchor publishes head on the platform stream and waits for the
// stream's acknowledgement.
func publishAnchor(ctx context.Context, js jetstream.JetStream, head audit.Anchor) error {
	body, err := json.Marshal(head)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(audit.AnchorSubject(head.File))
	msg.Data = body
	msg.Header.Set(nats.MsgIdHdr, head.MsgID())
	msg.Header.Set("content-type", "application/json")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	return nil
}
