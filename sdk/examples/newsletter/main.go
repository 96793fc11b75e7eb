// Command newsletter is an example Lethe subscriber: a newsletter that keeps
// its subscribers (subject id → e-mail address, mailing on or off) in a
// bbolt file, and answers Lethe's erasure requests and consent
// withdrawals for one tenant.
//
// Add a subscriber, then run it against Lethe's NATS (lethe dev starts
// one):
//
//	go run ./sdk/examples/newsletter --data ./newsletter --seed subject-42=ada@example.com
//	go run ./sdk/examples/newsletter --data ./newsletter --nats-url nats://127.0.0.1:4222
//
// Against a production NATS (deploy/nats/auth.conf) it connects as its own
// user, newsletter@<tenant>, with the password read from a file and the
// reply-subject prefix that user is confined to, over mutual TLS:
//
//	go run ./sdk/examples/newsletter --data ./newsletter --nats-url tls://nats.lethe.svc:4222 \
//	  --nats-user newsletter@clio --nats-password-file /run/secrets/nats-password \
//	  --nats-ca ca.crt --nats-cert tls.crt --nats-key tls.key
//
// --nats-inbox-prefix defaults to _INBOX.<user> when --nats-user is set.
//
// Its subscribers and its ledger share one file, so that erasing a
// subscriber and recording the answer commit together: however often
// Lethe delivers an erasure, the subscriber is erased once and Lethe hears
// the same answer every time.
//
// Restored from a backup, it first applies again the erasures made since
// the backup (docs/operations.md, "Erasure ledger"), then consumes:
//
//	go run ./sdk/examples/newsletter --data ./newsletter --replay-erasures-since 2026-11-30T01:55:00Z
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/connection"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// systemID is the newsletter's id in Lethe's registry.
const systemID = "newsletter"

// category is the data the newsletter holds, in Lethe's taxonomy.
const category = "user.contact.email"

var bucketSubscribers = []byte("subscribers")

// subscription is a subscriber's row, keyed by the tenant's subject id.
type subscription struct {
	Email   string `json:"email"`
	Mailing bool   `json:"mailing"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("newsletter stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	natsURL := flag.String("nats-url", nats.DefaultURL, "Lethe's NATS server")
	data := flag.String("data", "newsletter-data", "folder of the newsletter's database")
	tenant := flag.String("tenant", "clio", "the tenant whose events to answer")
	purposes := flag.String("purposes", "newsletter", "comma-separated purposes the newsletter mails for; withdrawing consent to any stops mailing")
	seed := flag.String("seed", "", "add the subscriber `subject-id=e-mail` and exit")
	replaySince := flag.String("replay-erasures-since", "", "after a restore from a backup: first apply again the erasures made since this `RFC 3339 time` (the backup's time minus a few minutes)")
	var conn connection.NATS
	conn.RegisterFlags(flag.CommandLine)
	flag.Parse()

	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	path := filepath.Join(*data, "newsletter.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		// bbolt allows one process per file: --seed cannot add to the
		// file of a newsletter that is running.
		return fmt.Errorf("%s is locked by another process: stop the running newsletter, seed, then start it again", path)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSubscribers)
		return err
	})
	if err != nil {
		return err
	}
	if *seed != "" {
		return subscribe(db, *seed)
	}

	// The ledger lives in the newsletter's own file (New, not Open), so
	// that a handler can record its answer in its own transaction.
	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		return err
	}
	opts, err := conn.Options(systemID)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	n := &newsletter{db: db, purposes: strings.Split(*purposes, ",")}
	sub, err := subscriber.New(subscriber.Config{
		SystemID:  systemID,
		Tenant:    *tenant,
		JetStream: js,
		Ledger:    l,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: n.erase,
			contract.KindConsentWithdrawn: n.withdraw,
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *replaySince != "" {
		since, err := time.Parse(time.RFC3339, *replaySince)
		if err != nil {
			return fmt.Errorf("--replay-erasures-since: %w", err)
		}
		// Before anything else: until the replay, the restored file holds
		// subscribers who were erased after the backup.
		res, err := sub.ReplayErasures(ctx, since)
		if err != nil {
			return err
		}
		log.Info("replayed the erasures since the backup", "read", res.Read, "applied", res.Applied, "already_applied", res.AlreadyApplied)
	}
	return sub.Run(ctx)
}

// newsletter answers Lethe's events from its subscribers' database.
type newsletter struct {
	db       *bbolt.DB
	purposes []string
}

// erase deletes the subject's subscription. The deletion and the ledger's
// record of the answer are one transaction: if the process dies before it
// reports, the redelivered event is answered from the ledger instead of
// being erased again.
func (n *newsletter) erase(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
	if !inScope(ev.Proto().GetErasureRequested().GetScope()) {
		// Nothing to change: the subscriber records this answer itself.
		return subscriber.NotFound(), nil
	}
	var out subscriber.Outcome
	err := n.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSubscribers)
		out = subscriber.NotFound()
		if b.Get([]byte(ev.SubjectID())) != nil {
			// bbolt keeps deleted bytes in free pages until they are
			// reused; a production system also compacts the file, or
			// encrypts each subject's rows under a key it deletes.
			if err := b.Delete([]byte(ev.SubjectID())); err != nil {
				return err
			}
			// Deleting the row answers an anonymisation request too: no
			// trace of the subject is left to identify.
			out = subscriber.Erased()
		}
		return ev.Record(tx, out)
	})
	return out, err
}

// withdraw stops mailing a subject who withdrew consent to a purpose the
// newsletter mails for. It keeps the row: a limit never erases by itself.
func (n *newsletter) withdraw(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
	withdrawn := ev.Proto().GetConsentWithdrawn().GetPurposeIds()
	if !slices.ContainsFunc(withdrawn, func(p string) bool { return slices.Contains(n.purposes, p) }) {
		return subscriber.NotApplicable("the newsletter mails for none of the purposes withdrawn"), nil
	}
	var out subscriber.Outcome
	err := n.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSubscribers)
		key := []byte(ev.SubjectID())
		v := b.Get(key)
		if v == nil {
			out = subscriber.NotApplicable("not subscribed")
			return ev.Record(tx, out)
		}
		var s subscription
		if err := json.Unmarshal(v, &s); err != nil {
			return err
		}
		s.Mailing = false
		v, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := b.Put(key, v); err != nil {
			return err
		}
		out = subscriber.Applied()
		return ev.Record(tx, out)
	})
	return out, err
}

// inScope reports whether an erasure's scope covers the newsletter's data:
// all of it, or a category that is the newsletter's or one above it in the
// taxonomy ("user.contact" covers "user.contact.email").
func inScope(scope *eventsv1.Scope) bool {
	return scope.GetAll() || slices.ContainsFunc(scope.GetCategories(), func(c *commonv1.DataCategory) bool {
		return contract.CategoryCovers(c.GetId(), category)
	})
}

// subscribe adds the subscriber seed ("subject-id=e-mail") with mailing
// on.
func subscribe(db *bbolt.DB, seed string) error {
	subject, email, ok := strings.Cut(seed, "=")
	if !ok || subject == "" || email == "" {
		return errors.New("--seed wants subject-id=e-mail")
	}
	v, err := json.Marshal(subscription{Email: email, Mailing: true})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketSubscribers).Put([]byte(subject), v) })
	if err == nil {
		fmt.Printf("subscribed %s\n", subject)
	}
	return err
}
