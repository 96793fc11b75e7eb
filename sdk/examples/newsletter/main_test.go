package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestNewsletter runs the example's handlers against a real server: the
// documentation must work.
func TestNewsletter(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: contract.StreamName, Subjects: []string{contract.AllSubjects}, MaxAge: time.Hour, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	db, err := bbolt.Open(filepath.Join(t.TempDir(), "newsletter.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket(bucketSubscribers); return err }); err != nil {
		t.Fatal(err)
	}
	for _, seed := range []string{"ada=ada@example.com", "bob=bob@example.com"} {
		if err := subscribe(db, seed); err != nil {
			t.Fatal(err)
		}
	}
	l, err := ledger.New(db, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &newsletter{db: db, purposes: []string{"newsletter"}}
	sub, err := subscriber.New(subscriber.Config{
		SystemID: systemID, Tenant: "clio", JetStream: js, Ledger: l,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: n.erase,
			contract.KindConsentWithdrawn: n.withdraw,
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	defer func() { cancel(); <-done }()

	erase := func(subject string, scope *eventsv1.Scope) *eventsv1.Event {
		ev := event(subject)
		ev.Body = &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: scope, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}}
		return ev
	}
	withdraw := func(subject string, purposes ...string) *eventsv1.Event {
		ev := event(subject)
		ev.Body = &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: purposes}}
		return ev
	}
	all := &eventsv1.Scope{All: true}
	for _, tc := range []struct {
		name string
		ev   *eventsv1.Event
		want eventsv1.OutcomeKind
	}{
		{"erase ada", erase("ada", all), eventsv1.OutcomeKind_OUTCOME_KIND_ERASED},
		{"erase ada again", erase("ada", all), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND},
		{"erase only bob's phone number", erase("bob", &eventsv1.Scope{Categories: []*commonv1.DataCategory{{Id: "user.contact.phone_number"}}}), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND},
		{"bob withdraws analytics", withdraw("bob", "analytics"), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE},
		{"bob withdraws the newsletter", withdraw("bob", "analytics", "newsletter"), eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED},
		{"ada withdraws the newsletter", withdraw("ada", "newsletter"), eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE},
	} {
		if got := answer(t, js, tc.ev); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}

	err = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSubscribers)
		if b.Get([]byte("ada")) != nil {
			t.Error("ada is still subscribed")
		}
		var bob subscription
		if err := json.Unmarshal(b.Get([]byte("bob")), &bob); err != nil {
			return err
		}
		if bob.Mailing || bob.Email != "bob@example.com" {
			t.Errorf("bob = %+v, want kept with mailing off", bob)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var seq uint64

// event returns an event about subject, without a body.
func event(subject string) *eventsv1.Event {
	seq++
	return &eventsv1.Event{
		Id: fmt.Sprintf("ev-%d", seq), TenantId: "clio", SubjectId: subject, Sequence: seq,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-1"},
		OccurredAt: timestamppb.Now(), Source: "lethe/dsar",
	}
}

// answer publishes ev and returns the newsletter's outcome.
func answer(t *testing.T, js jetstream.JetStream, ev *eventsv1.Event) eventsv1.OutcomeKind {
	t.Helper()
	ctx := context.Background()
	subject, _ := contract.EventSubject(ev)
	header, _ := contract.EventHeaders(ev)
	data, _ := contract.Marshal(ev)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: header, Data: data}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"lethe.clio.outcome.newsletter"}})
	if err != nil {
		t.Fatal(err)
	}
	var kind eventsv1.OutcomeKind
	// Each poll reads the next outcome on the newsletter's subject.
	eventually.Succeeds(t, "an outcome for "+ev.GetId(), func() error {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		outcomes, err := contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outcomes {
			if o.GetEventId() == ev.GetId() {
				kind = o.GetKind()
				return nil
			}
		}
		return fmt.Errorf("the last outcome read was for another event")
	})
	return kind
}

// TestNATSOptions: the newsletter connects as its own user with the
// password from a file and the inbox prefix its permissions confine it
// to, and refuses half a configuration.
func TestNATSOptions(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	apply := func(t *testing.T, c natsConfig) nats.Options {
		t.Helper()
		opts, err := c.options()
		if err != nil {
			t.Fatal(err)
		}
		o := nats.GetDefaultOptions()
		for _, opt := range opts {
			if err := opt(&o); err != nil {
				t.Fatal(err)
			}
		}
		return o
	}
	o := apply(t, natsConfig{user: "newsletter@clio", passwordFile: pwFile})
	if o.User != "newsletter@clio" || o.Password != "s3cret" || o.InboxPrefix != "_INBOX.newsletter@clio" {
		t.Errorf("user %q, password %q, inbox prefix %q", o.User, o.Password, o.InboxPrefix)
	}
	if o := apply(t, natsConfig{user: "newsletter@clio", passwordFile: pwFile, inboxPrefix: "_INBOX.custom"}); o.InboxPrefix != "_INBOX.custom" {
		t.Errorf("inbox prefix %q, want the flag's", o.InboxPrefix)
	}
	if o := apply(t, natsConfig{}); o.User != "" || o.InboxPrefix != "" {
		t.Errorf("without a user: user %q, inbox prefix %q", o.User, o.InboxPrefix)
	}
	for _, c := range []natsConfig{
		{user: "newsletter@clio"},
		{passwordFile: pwFile},
		{user: "newsletter@clio", passwordFile: empty},
		{user: "newsletter@clio", passwordFile: filepath.Join(dir, "missing")},
		{certFile: "tls.crt"},
	} {
		if _, err := c.options(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
