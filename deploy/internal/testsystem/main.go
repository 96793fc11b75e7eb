// Command testsystem is a downstream system on Lethe's SDK for the
// production topology test (deploy/topology_test.go): it answers one
// tenant's erasure requests and consent withdrawals as its own NATS user,
// over mutual TLS, and counts in its own bbolt file how often it applied
// each request, in the same transaction as the SDK ledger's record of the
// answer. The test reads the counts afterwards (--report) to show that no
// request was applied twice, whatever the faults.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// bucketApplied maps "<kind> <cause id> <subject id>" to how often the
// system applied that request (a big-endian uint64).
var bucketApplied = []byte("applied")

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("testsystem stopped", "error", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	system := flag.String("system", "", "the system's id in Lethe's registry")
	tenant := flag.String("tenant", "", "the tenant whose events to answer")
	data := flag.String("data", "", "folder of the system's bbolt file")
	natsURL := flag.String("nats-url", "", "Lethe's NATS servers, comma-separated")
	passwordFile := flag.String("nats-password-file", "", "file holding the password of the NATS user <system>@<tenant>")
	caFile := flag.String("nats-ca", "", "CA of the NATS servers' certificates")
	certFile := flag.String("nats-cert", "", "client certificate for mutual TLS with NATS")
	keyFile := flag.String("nats-key", "", "key of --nats-cert")
	ackWait := flag.Duration("ack-wait", subscriber.DefaultAckWait, "how long NATS waits for an answer before it redelivers")
	report := flag.Bool("report", false, "print the counts of applied requests as JSON and exit")
	flag.Parse()
	if *system == "" || *tenant == "" || *data == "" {
		return errors.New("--system, --tenant and --data are required")
	}
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	db, err := bbolt.Open(filepath.Join(*data, "system.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketApplied)
		return err
	}); err != nil {
		return err
	}
	if *report {
		return printCounts(db)
	}

	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		return err
	}
	password, err := os.ReadFile(*passwordFile)
	if err != nil {
		return fmt.Errorf("--nats-password-file: %w", err)
	}
	user := *system + "@" + *tenant
	nc, err := nats.Connect(*natsURL,
		nats.Name(user),
		nats.UserInfo(user, strings.TrimSpace(string(password))),
		nats.CustomInboxPrefix("_INBOX."+user),
		nats.RootCAs(*caFile),
		nats.ClientCert(*certFile, *keyFile),
		// A node that is down comes back; keep trying rather than give up,
		// and notice a node cut off from the cluster within two missed
		// pings, as the newsletter example does.
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.PingInterval(10*time.Second),
		nats.MaxPingsOutstanding(2),
	)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sub, err := subscriber.New(subscriber.Config{
		SystemID:  *system,
		Tenant:    *tenant,
		JetStream: js,
		Ledger:    l,
		AckWait:   *ackWait,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				return apply(db, ev, subscriber.Erased())
			},
			contract.KindConsentWithdrawn: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				return apply(db, ev, subscriber.Applied())
			},
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("testsystem answering", "user", user)
	return sub.Run(ctx)
}

// apply counts the request the event carries and records out in the same
// transaction, as a real system changes its data and records its answer
// together.
func apply(db *bbolt.DB, ev *subscriber.Event, out subscriber.Outcome) (subscriber.Outcome, error) {
	key := []byte(fmt.Sprintf("%s %s %s", ev.Kind(), ev.Cause().GetId(), ev.SubjectID()))
	err := db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketApplied)
		var n uint64
		if v := b.Get(key); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		if err := b.Put(key, binary.BigEndian.AppendUint64(nil, n+1)); err != nil {
			return err
		}
		return ev.Record(tx, out)
	})
	return out, err
}

// printCounts writes {"<kind> <cause> <subject>": count, ...}.
func printCounts(db *bbolt.DB) error {
	counts := map[string]uint64{}
	err := db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketApplied).ForEach(func(k, v []byte) error {
			counts[string(k)] = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(counts)
}
