package natsauth_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/deploy/natsauth"
	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// shippedConfig is the NATS configuration the Kubernetes ConfigMap is
// generated from.
var shippedConfig = filepath.Join(deploy.Dir(), "nats", "nats.conf")

// passwordVariables returns the NATS_PASSWORD_* variables auth.conf
// refers to.
func passwordVariables(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deploy.Dir(), "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range regexp.MustCompile(`\$(NATS_PASSWORD_[A-Z0-9_]+)`).FindAllStringSubmatch(string(data), -1) {
		vars = append(vars, m[1])
	}
	return vars
}

// setEnv gives every password variable a fresh random value, as the
// Secret lethe-nats-users does in a cluster, and returns them.
func setEnv(t *testing.T) map[string]string {
	t.Helper()
	t.Setenv("SERVER_NAME", "nats-test")
	values := map[string]string{}
	for _, v := range passwordVariables(t) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		values[v] = hex.EncodeToString(b)
		t.Setenv(v, values[v])
	}
	return values
}

// loadShipped parses the shipped configuration with passwords in the
// environment.
func loadShipped(t *testing.T) (*server.Options, map[string]string) {
	t.Helper()
	passwords := setEnv(t)
	opts, err := server.ProcessConfigFile(shippedConfig)
	if err != nil {
		t.Fatal(err)
	}
	return opts, passwords
}

// startShipped runs a real nats-server from the shipped configuration,
// changed only where a test process must: a free port on loopback, a
// temporary store, one node instead of a cluster, no monitoring port and
// no pid file.
func startShipped(t *testing.T) (*server.Server, map[string]string) {
	t.Helper()
	opts, passwords := loadShipped(t)
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPPort = 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.RoutesStr = ""
	opts.StoreDir = t.TempDir()
	opts.PidFile = ""
	s := brokertest.Run(t, opts)
	return s, passwords
}

// conn is a connection as one user, with the asynchronous errors (where
// the server's permission violations arrive) collected.
type conn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func connect(t *testing.T, s *server.Server, user, password string, opts ...nats.Option) *conn {
	t.Helper()
	c := &conn{errs: make(chan error, 256)}
	opts = append([]nats.Option{
		nats.UserInfo(user, password),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// subscriberConn connects as system's user for tenant, with the inbox
// prefix its permissions require.
func subscriberConn(t *testing.T, s *server.Server, passwords map[string]string, system, tenant string) *conn {
	t.Helper()
	user := system + "@" + tenant
	return connect(t, s, user, passwords[natsauth.PasswordVariable(user)], nats.CustomInboxPrefix(natsauth.InboxPrefix(system, tenant)))
}

// expectDenied waits for the server's permission violation on subject.
func (c *conn) expectDenied(t *testing.T, what, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-deadline:
			t.Errorf("%s: no permission violation for %s", what, subject)
			return
		}
	}
}

func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	t.Cleanup(cancel)
	return ctx
}

// event returns an erasure directive for tenant.
func event(id, tenant string) *eventsv1.Event {
	return &eventsv1.Event{
		Id:         id,
		TenantId:   tenant,
		SubjectId:  "subject-42",
		Sequence:   1,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-" + id},
		OccurredAt: timestamppb.Now(),
		Source:     "lethe/dsar",
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
}

// publishEvent publishes ev as the outbox relay does.
func publishEvent(ctx context.Context, js jetstream.JetStream, ev *eventsv1.Event) error {
	natsSubject, err := contract.EventSubject(ev)
	if err != nil {
		return err
	}
	h, err := contract.EventHeaders(ev)
	if err != nil {
		return err
	}
	data, err := contract.Marshal(ev)
	if err != nil {
		return err
	}
	_, err = js.PublishMsg(ctx, &nats.Msg{Subject: natsSubject, Header: h, Data: data})
	return err
}

// stored returns how many messages of the LETHE stream are on subject, as
// the admin sees it.
func stored(t *testing.T, admin *conn, subject string) uint64 {
	t.Helper()
	stream, err := admin.js.Stream(context.Background(), contract.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestShippedConfiguration checks the shipped file as the server reads
// it: JetStream with fsync on every write, every user's permissions equal
// to the rules in this package, and every password taken from the
// environment, never written in the file.
func TestShippedConfiguration(t *testing.T) {
	opts, passwords := loadShipped(t)
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("JetStream %v, sync always %v: an acknowledged publish must be on disk", opts.JetStream, opts.SyncAlways)
	}
	if opts.Cluster.Name == "" || len(opts.Routes) != 3 {
		t.Errorf("cluster %q with %d routes, want a named cluster of 3", opts.Cluster.Name, len(opts.Routes))
	}
	seen := map[string]bool{}
	for _, u := range opts.Users {
		seen[u.Username] = true
		if want := passwords[natsauth.PasswordVariable(u.Username)]; want == "" || u.Password != want {
			t.Errorf("user %s: password is not $%s", u.Username, natsauth.PasswordVariable(u.Username))
		}
		var want *server.Permissions
		switch system, tenant, isSystem := strings.Cut(u.Username, "@"); {
		case u.Username == natsauth.AdminUser:
		case slices.Contains(natsauth.Services, u.Username):
			want = natsauth.Service(u.Username)
		case u.Username == natsauth.ConsentReplicaUser:
			want = natsauth.ConsentReplica()
		case u.Username == natsauth.ConnectUser:
			// The systems the block lists, read from its consumers: the
			// block must be exactly what Connect gives those systems.
			var systems []natsauth.System
			for _, subject := range u.Permissions.Publish.Allow {
				name, ok := strings.CutPrefix(subject, "$JS.API.CONSUMER.INFO."+contract.StreamName+".")
				if !ok {
					continue
				}
				owner, _, _ := strings.Cut(name, "~")
				system, tenant, _ := strings.Cut(owner, "@")
				if sys := (natsauth.System{ID: system, Tenant: tenant}); !slices.Contains(systems, sys) {
					systems = append(systems, sys)
				}
			}
			if len(systems) == 0 {
				t.Errorf("user %s answers no system: the shipped example is gone", u.Username)
			}
			var err error
			if want, err = natsauth.Connect(systems...); err != nil {
				t.Errorf("user %s: %v", u.Username, err)
				continue
			}
		case isSystem:
			var err error
			if want, err = natsauth.Subscriber(system, tenant); err != nil {
				t.Errorf("user %s: %v", u.Username, err)
				continue
			}
		default:
			t.Errorf("user %s is neither a service, a system@tenant nor admin", u.Username)
			continue
		}
		if !samePermissions(u.Permissions, want) {
			got, _ := json.MarshalIndent(u.Permissions, "", "  ")
			exp, _ := json.MarshalIndent(want, "", "  ")
			t.Errorf("user %s: permissions\n%s\nwant\n%s", u.Username, got, exp)
		}
	}
	for _, name := range append([]string{natsauth.AdminUser, "newsletter@clio", natsauth.ConnectUser, natsauth.ConsentReplicaUser}, natsauth.Services...) {
		if !seen[name] {
			t.Errorf("no user %s", name)
		}
	}
	if len(opts.Nkeys) != 0 || opts.Username != "" || opts.Authorization != "" || opts.NoAuthUser != "" {
		t.Error("the file has a way in besides its users")
	}
}

func samePermissions(a, b *server.Permissions) bool {
	if a == nil || b == nil {
		return a == b
	}
	same := func(x, y *server.SubjectPermission) bool {
		if x == nil || y == nil {
			return x == y
		}
		return slices.Equal(x.Allow, y.Allow) && slices.Equal(x.Deny, y.Deny)
	}
	return same(a.Publish, b.Publish) && same(a.Subscribe, b.Subscribe) && a.Response == nil && b.Response == nil
}

// TestMissingPasswordStopsServer shows that a user whose password variable
// is not set keeps the server from starting instead of leaving it open.
func TestMissingPasswordStopsServer(t *testing.T) {
	setEnv(t)
	if err := os.Unsetenv(natsauth.PasswordVariable("newsletter@clio")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ProcessConfigFile(shippedConfig); err == nil {
		t.Fatal("the configuration loaded without NATS_PASSWORD_NEWSLETTER_CLIO")
	}
}

// TestSubscriberPermissions runs the real SDK subscriber of the
// newsletter system of tenant clio as its shipped user, and shows what
// that user can and cannot do on a real server.
func TestSubscriberPermissions(t *testing.T) {
	s, passwords := startShipped(t)
	admin := connect(t, s, natsauth.AdminUser, passwords[natsauth.PasswordVariable(natsauth.AdminUser)])
	consent := connect(t, s, "consent", passwords[natsauth.PasswordVariable("consent")])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The service provisions the platform stream, as every service does
	// at start, and publishes one directive for clio and one for ecorp.
	if _, err := broker.EnsureStream(ctx, consent.js, broker.DefaultStreamConfig()); err != nil {
		t.Fatalf("consent provisions the stream: %v", err)
	}
	streamsProvisioned := time.Now()
	if err := publishEvent(ctx, consent.js, event("ev-clio", "clio")); err != nil {
		t.Fatalf("consent publishes clio's event: %v", err)
	}
	if err := publishEvent(ctx, consent.js, event("ev-ecorp", "ecorp")); err != nil {
		t.Fatalf("consent publishes ecorp's event: %v", err)
	}

	// The newsletter system receives clio's event and reports its outcome.
	newsletter := subscriberConn(t, s, passwords, "newsletter", "clio")
	l, err := ledger.Open(filepath.Join(t.TempDir(), "newsletter.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	handled := make(chan string, 8)
	sub, err := subscriber.New(subscriber.Config{
		SystemID:  "newsletter",
		Tenant:    "clio",
		JetStream: newsletter.js,
		Ledger:    l,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				handled <- ev.ID()
				return subscriber.Erased(), nil
			},
		},
		BackOff: []time.Duration{10 * time.Millisecond},
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer runUntilHandled(t, ctx, sub, handled, "ev-clio", "newsletter@clio")()

	// The consent service reads the outcome through its own consumer.
	outcomes, err := consent.js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable: "lethe-consent-outcomes", FilterSubject: contract.AllOutcomes, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("consent creates its outcomes consumer: %v", err)
	}
	msg, err := outcomes.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("consent reads an outcome: %v", err)
	}
	if msg.Subject() != "lethe.clio.outcome.newsletter" {
		t.Fatalf("outcome on %s", msg.Subject())
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}

	// Restored from a backup, the system replays clio's erasures from the
	// erasure ledger, and only clio's.
	t.Run("replay its tenant's erasures", func(t *testing.T) {
		var replayed []string
		replay, err := subscriber.New(subscriber.Config{
			SystemID: "newsletter", Tenant: "clio", JetStream: newsletter.js, Ledger: l, Logger: slog.New(slog.DiscardHandler),
			Handlers: map[contract.Kind]subscriber.Handler{
				contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
					replayed = append(replayed, ev.ID())
					return subscriber.Erased(), nil
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		eventually.Succeeds(t, "the erasure ledger holds clio's and ecorp's erasures", func() error {
			ledger, err := admin.js.Stream(ctx, contract.ErasureLedgerStream)
			if err != nil {
				t.Fatal(err)
			}
			if n := ledger.CachedInfo().State.Msgs; n != 2 {
				return fmt.Errorf("it holds %d", n)
			}
			return nil
		})
		if res, err := replay.ReplayErasures(ctx, streamsProvisioned); err != nil || res.Read != 1 || !slices.Equal(replayed, []string{"ev-clio"}) {
			t.Fatalf("ReplayErasures = %+v, %v; replayed %v, want clio's erasure alone", res, err, replayed)
		}
		// Its replay consumer pointed at another tenant's erasures.
		_, err = newsletter.js.CreateConsumer(short(t), contract.ErasureLedgerStream, jetstream.ConsumerConfig{
			Name: "newsletter@clio~erasure_replay", FilterSubject: "lethe.ecorp.erasure.requested",
		})
		if err == nil {
			t.Error("newsletter@clio created its replay consumer on ecorp's erasures")
		}
		newsletter.expectDenied(t, "create replay consumer",
			"$JS.API.CONSUMER.CREATE.LETHE_ERASURES.newsletter@clio~erasure_replay.lethe.ecorp.erasure.requested")
	})

	// What the newsletter system must not do. Each attempt fails and the
	// server reports the violation; publishes leave the stream unchanged.
	t.Run("report for another system or tenant, or forge a directive", func(t *testing.T) {
		for _, subject := range []string{
			"lethe.clio.outcome.crm",         // another system of clio
			"lethe.ecorp.outcome.newsletter", // itself, for another tenant
			"lethe.clio.erasure.requested",   // a directive
		} {
			before := stored(t, admin, subject)
			_, err := newsletter.js.PublishMsg(short(t), &nats.Msg{Subject: subject, Data: []byte("forged")})
			if err == nil {
				t.Errorf("publish on %s was acknowledged", subject)
			}
			newsletter.expectDenied(t, "publish", subject)
			if after := stored(t, admin, subject); after != before {
				t.Errorf("%s: the stream holds %d messages, had %d", subject, after, before)
			}
		}
	})
	t.Run("read another tenant's events", func(t *testing.T) {
		// Subscribing to the events directly.
		if _, err := newsletter.nc.SubscribeSync("lethe.ecorp.>"); err != nil {
			t.Fatal(err)
		}
		newsletter.expectDenied(t, "subscribe", "lethe.ecorp.>")
		// Snooping on what the server delivers to other systems' inboxes.
		if _, err := newsletter.nc.SubscribeSync("_INBOX.>"); err != nil {
			t.Fatal(err)
		}
		newsletter.expectDenied(t, "subscribe", "_INBOX.>")

		// The real SDK, pointed at another tenant: its consumer cannot be
		// created.
		other, err := subscriber.New(subscriber.Config{
			SystemID: "newsletter", Tenant: "ecorp", JetStream: newsletter.js, Ledger: l,
			Handlers: map[contract.Kind]subscriber.Handler{
				contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
					t.Error("newsletter@clio received an event of ecorp")
					return subscriber.Erased(), nil
				},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := other.Run(runCtx); err == nil && runCtx.Err() == nil {
			t.Error("the subscriber for ecorp ran")
		}
		newsletter.expectDenied(t, "create consumer",
			"$JS.API.CONSUMER.CREATE.LETHE.newsletter@ecorp~erasure_requested.lethe.ecorp.erasure.requested")
		if _, err := admin.js.Consumer(ctx, contract.StreamName, "newsletter@ecorp~erasure_requested"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("consumer newsletter@ecorp~erasure_requested: %v, want not found", err)
		}

		// Its own consumers, pointed elsewhere. The filter travels in the
		// subject, so the server holds it to clio's event of the
		// consumer's kind.
		for _, filter := range []string{
			"lethe.ecorp.erasure.requested", // another tenant's events
			"lethe.clio.outcome.crm",        // another system's outcomes
			"lethe.clio.consent.withdrawn",  // another kind than the consumer's
			"lethe.clio.>",                  // everything of clio
		} {
			_, err = newsletter.js.CreateOrUpdateConsumer(short(t), contract.StreamName, jetstream.ConsumerConfig{
				Durable: "newsletter@clio~erasure_requested", FilterSubject: filter,
			})
			if err == nil {
				t.Errorf("newsletter@clio filtered its consumer on %s", filter)
			}
			newsletter.expectDenied(t, "create filtered consumer", "$JS.API.CONSUMER.CREATE.LETHE.newsletter@clio~erasure_requested."+filter)
		}

		// The path nats-server does not check (issue #6180): several
		// filters travel in the request's body, on a subject without
		// them. It was open to the SDK's earlier multi-filter consumer
		// "newsletter@clio"; now no consumer name of the system may be
		// created that way, so another tenant's filters never reach the
		// server.
		for _, name := range []string{"newsletter@clio", "newsletter@clio~erasure_requested"} {
			_, err = newsletter.js.CreateOrUpdateConsumer(short(t), contract.StreamName, jetstream.ConsumerConfig{
				Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
				FilterSubjects: []string{"lethe.ecorp.erasure.requested", "lethe.ecorp.consent.withdrawn"},
			})
			if err == nil {
				t.Errorf("newsletter@clio created consumer %s on ecorp's events with several filters", name)
			}
			newsletter.expectDenied(t, "create multi-filter consumer", "$JS.API.CONSUMER.CREATE.LETHE."+name)
			if _, err := admin.js.Consumer(ctx, contract.StreamName, name); name == "newsletter@clio" && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Errorf("consumer %s: %v, want not found", name, err)
			}
		}
		if info, err := admin.js.Consumer(ctx, contract.StreamName, "newsletter@clio~erasure_requested"); err != nil {
			t.Error(err)
		} else if f := info.CachedInfo().Config; f.FilterSubject != "lethe.clio.erasure.requested" || len(f.FilterSubjects) != 0 {
			t.Errorf("newsletter@clio's consumer filters %q %v, want clio's erasures alone", f.FilterSubject, f.FilterSubjects)
		}

		// Another system's consumer, and the stream's messages directly.
		if _, err := admin.js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
			Durable: "crm@ecorp", FilterSubject: "lethe.ecorp.erasure.requested", AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Fatal(err)
		}
		for _, subject := range []string{
			"$JS.API.CONSUMER.INFO.LETHE.crm@ecorp",
			"$JS.API.CONSUMER.MSG.NEXT.LETHE.crm@ecorp",
			"$JS.API.STREAM.MSG.GET.LETHE",
			"$JS.API.DIRECT.GET.LETHE",
			"$JS.API.DIRECT.GET.LETHE.lethe.ecorp.erasure.requested",
			"$JS.API.CONSUMER.DELETE.LETHE.newsletter@clio~erasure_requested",
			"$JS.API.CONSUMER.DURABLE.CREATE.LETHE.newsletter@clio~erasure_requested",
			"$JS.API.STREAM.DELETE.LETHE",
			"$JS.API.STREAM.PURGE.LETHE",
			"$JS.API.STREAM.MSG.GET.LETHE_ERASURES",
			"$JS.API.DIRECT.GET.LETHE_ERASURES",
			"$JS.API.CONSUMER.MSG.NEXT.LETHE_ERASURES.crm@ecorp~erasure_replay",
			"$JS.API.STREAM.UPDATE.LETHE_ERASURES",
			"$JS.API.STREAM.DELETE.LETHE_ERASURES",
			"$JS.API.STREAM.PURGE.LETHE_ERASURES",
		} {
			if reply, err := newsletter.nc.RequestWithContext(short(t), subject, []byte(`{"seq":2,"batch":1}`)); err == nil {
				t.Errorf("request on %s answered: %s", subject, reply.Data)
			}
			newsletter.expectDenied(t, "request", subject)
		}
	})
}

// TestServicePermissions shows, for every service's shipped user, that it
// can do what the platform does (provision the streams, publish an event,
// consume outcomes) and cannot report an outcome in a system's name.
func TestServicePermissions(t *testing.T) {
	s, passwords := startShipped(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := connect(t, s, natsauth.AdminUser, passwords[natsauth.PasswordVariable(natsauth.AdminUser)])
	for i, name := range natsauth.Services {
		c := connect(t, s, name, passwords[natsauth.PasswordVariable(name)])
		if _, err := broker.EnsureStream(ctx, c.js, broker.DefaultStreamConfig()); err != nil {
			t.Errorf("%s provisions the streams: %v", name, err)
			continue
		}
		if err := publishEvent(ctx, c.js, event("ev-"+name, "clio")); err != nil {
			t.Errorf("%s publishes an event: %v", name, err)
		}
		subject := "lethe.clio.outcome.newsletter"
		before := stored(t, admin, subject)
		if _, err := c.js.PublishMsg(short(t), &nats.Msg{Subject: subject, Data: []byte("forged")}); err == nil {
			t.Errorf("%s reported an outcome for newsletter", name)
		}
		c.expectDenied(t, name+" publishes an outcome", subject)
		if after := stored(t, admin, subject); after != before {
			t.Errorf("%s: outcome stored", name)
		}
		// Outcomes reach the service through its own consumer.
		if err := publishAsNewsletter(ctx, t, s, passwords, i); err != nil {
			t.Fatal(err)
		}
		cons, err := c.js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
			Durable: "lethe-" + name + "-outcomes", FilterSubject: contract.AllOutcomes, AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			t.Errorf("%s creates its outcomes consumer: %v", name, err)
			continue
		}
		if _, err := c.js.CreateOrUpdateConsumer(ctx, broker.DeadLetterStreamName(contract.StreamName), jetstream.ConsumerConfig{
			Durable: "lethe-" + name + "-dead-letters", AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Errorf("%s creates its dead-letter consumer: %v", name, err)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Errorf("%s reads an outcome: %v", name, err)
			continue
		}
		if err := msg.DoubleAck(ctx); err != nil {
			t.Errorf("%s acknowledges an outcome: %v", name, err)
		}
		if _, err := c.js.Consumer(ctx, contract.StreamName, "lethe-"+name+"-outcomes"); err != nil {
			t.Errorf("%s reads its consumer: %v", name, err)
		}
		// The registry's tenant events reach a plain subscription (consent
		// follows tenants' countries so).
		sub, err := c.nc.SubscribeSync("lethe.*.tenant.registered")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := admin.nc.Publish("lethe.clio.tenant.registered", []byte(name)); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Errorf("%s receives the registry's tenant events: %v", name, err)
		}
		_ = sub.Unsubscribe()
		// The registry lists the systems' consumers to report their lag.
		stream, err := c.js.Stream(ctx, contract.StreamName)
		if err != nil {
			t.Fatal(err)
		}
		list := stream.ListConsumers(ctx)
		var listed int
		for range list.Info() {
			listed++
		}
		if err := list.Err(); err != nil || listed == 0 {
			t.Errorf("%s lists the stream's consumers: %d, %v", name, listed, err)
		}
	}
}

// publishAsNewsletter publishes an outcome as the newsletter system does.
func publishAsNewsletter(ctx context.Context, t *testing.T, s *server.Server, passwords map[string]string, n int) error {
	c := subscriberConn(t, s, passwords, "newsletter", "clio")
	_, err := c.js.PublishMsg(ctx, &nats.Msg{Subject: "lethe.clio.outcome.newsletter", Data: []byte{byte(n)}})
	return err
}

// TestConnectPermissions runs lethe-connect's shipped user against a real
// server: on one connection it answers the system its block lists
// (web-analytics@clio) as that system's own user would, consumers,
// outcome and all, and may not touch an SDK system's consumers (which
// would take its events from it), report another system's outcome, or
// read another inbox.
func TestConnectPermissions(t *testing.T) {
	s, passwords := startShipped(t)
	consent := connect(t, s, "consent", passwords[natsauth.PasswordVariable("consent")])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := broker.EnsureStream(ctx, consent.js, broker.DefaultStreamConfig()); err != nil {
		t.Fatalf("consent provisions the stream: %v", err)
	}
	if err := publishEvent(ctx, consent.js, event("ev-clio", "clio")); err != nil {
		t.Fatal(err)
	}
	runner := connect(t, s, natsauth.ConnectUser, passwords[natsauth.PasswordVariable(natsauth.ConnectUser)],
		nats.CustomInboxPrefix("_INBOX."+natsauth.ConnectUser))
	l, err := ledger.Open(filepath.Join(t.TempDir(), "web-analytics.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	handled := make(chan string, 8)
	sub, err := subscriber.New(subscriber.Config{SystemID: "web-analytics", Tenant: "clio", JetStream: runner.js, Ledger: l,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				handled <- ev.ID()
				return subscriber.Erased(), nil
			},
		},
		BackOff: []time.Duration{10 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer runUntilHandled(t, ctx, sub, handled, "ev-clio", "lethe-connect for web-analytics@clio")()
	outcomes, err := consent.js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable: "lethe-consent-outcomes", FilterSubject: contract.AllOutcomes, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := outcomes.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil || msg.Subject() != "lethe.clio.outcome.web-analytics" {
		t.Fatalf("the runner's outcome: %v, %v", msg, err)
	}

	// An SDK system's consumer: the runner may neither create nor read it.
	if _, err := runner.js.CreateConsumer(short(t), contract.StreamName, jetstream.ConsumerConfig{
		Name: "newsletter@clio~erasure_requested", FilterSubject: "lethe.clio.erasure.requested", AckPolicy: jetstream.AckExplicitPolicy,
	}); err == nil {
		t.Error("lethe-connect created newsletter@clio's consumer")
	}
	runner.expectDenied(t, "create an SDK system's consumer",
		"$JS.API.CONSUMER.CREATE.LETHE.newsletter@clio~erasure_requested.lethe.clio.erasure.requested")
	// Another system's outcome, and another user's inbox.
	if err := runner.nc.Publish("lethe.clio.outcome.newsletter", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	runner.expectDenied(t, "report newsletter's outcome", "lethe.clio.outcome.newsletter")
	if _, err := runner.nc.SubscribeSync("_INBOX.newsletter@clio.>"); err != nil {
		t.Fatal(err)
	}
	runner.expectDenied(t, "read newsletter's inbox", "_INBOX.newsletter@clio.>")
}

// runUntilHandled runs sub until handled reports its first event, which
// must be want, and returns the function that stops it; who names the
// subscriber in failures.
func runUntilHandled(t *testing.T, ctx context.Context, sub *subscriber.Subscriber, handled <-chan string, want, who string) (stop func()) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Run(runCtx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: subscriber Run: %v", who, err)
		}
	}
	select {
	case id := <-handled:
		if id != want {
			stop()
			t.Fatalf("%s handled %s, want %s", who, id, want)
		}
	case err := <-done:
		t.Fatalf("%s: subscriber stopped: %v", who, err)
	case <-ctx.Done():
		stop()
		t.Fatalf("%s never received %s", who, want)
	}
	return stop
}

// TestConsentReplicationPermissions runs the consent writer's and the
// read replicas' shipped users against a real server: the writer
// provisions the replication stream and the snapshot bucket, publishes an
// entry and puts, lists and drops snapshots; a replica checks the platform
// streams as its host does at start (and may change none), follows the
// stream with an ordered consumer and reads a snapshot, and may publish
// nothing.
func TestConsentReplicationPermissions(t *testing.T) {
	s, passwords := startShipped(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	writer := connect(t, s, "consent", passwords[natsauth.PasswordVariable("consent")])
	if err := broker.EnsureConsentReplication(ctx, writer.js, broker.DefaultStreamConfig()); err != nil {
		t.Fatalf("the writer provisions its replication: %v", err)
	}
	if _, err := writer.js.Publish(ctx, broker.ConsentStateSubject("s0", "clio"), []byte("entry")); err != nil {
		t.Fatalf("the writer publishes an entry: %v", err)
	}
	// At start the writer reads back the newest entry of each subject
	// (consent's settleEpoch).
	state, err := writer.js.Stream(ctx, broker.ConsentStateStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := state.GetLastMsgForSubject(ctx, broker.ConsentStateSubject("s0", "clio")); err != nil || string(msg.Data) != "entry" {
		t.Fatalf("the writer reads back its newest entry: %v", err)
	}
	obs, err := writer.js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"s0.1", "s0.2"} {
		if _, err := obs.PutBytes(ctx, name, []byte("snapshot "+name)); err != nil {
			t.Fatalf("the writer puts snapshot %s: %v", name, err)
		}
	}
	if list, err := obs.List(ctx); err != nil || len(list) != 2 {
		t.Fatalf("the writer lists the snapshots: %d, %v", len(list), err)
	}
	if err := obs.Delete(ctx, "s0.1"); err != nil {
		t.Fatalf("the writer drops a snapshot: %v", err)
	}

	replica := connect(t, s, natsauth.ConsentReplicaUser, passwords[natsauth.PasswordVariable(natsauth.ConsentReplicaUser)])
	// The host's check of the platform streams at start, which every
	// process of the consent binary makes, a replica's too: it reads
	// what the services provisioned, and may change none of it.
	if _, err := broker.EnsureStream(ctx, writer.js, broker.DefaultStreamConfig()); err != nil {
		t.Fatalf("the writer provisions the platform streams: %v", err)
	}
	if _, err := broker.EnsureStream(ctx, replica.js, broker.DefaultStreamConfig()); err != nil {
		t.Fatalf("a replica checks the platform streams at start: %v", err)
	}
	for _, subject := range []string{"$JS.API.STREAM.UPDATE." + contract.StreamName, "$JS.API.STREAM.DELETE." + contract.StreamName,
		"$JS.API.STREAM.CREATE.LETHE_FORGED"} {
		if err := replica.nc.Publish(subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		replica.expectDenied(t, "a replica changes the platform streams", subject)
	}
	cons, err := replica.js.OrderedConsumer(ctx, broker.ConsentStateStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{broker.ConsentStateFilter("s0")}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 1})
	if err != nil {
		t.Fatalf("a replica follows the stream: %v", err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := it.Next()
	it.Stop()
	if err != nil || string(msg.Data()) != "entry" {
		t.Fatalf("a replica reads the entry: %v", err)
	}
	robs, err := replica.js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		t.Fatalf("a replica opens the bucket: %v", err)
	}
	if list, err := robs.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("a replica lists the snapshots: %d, %v", len(list), err)
	}
	if data, err := robs.GetBytes(ctx, "s0.2"); err != nil || string(data) != "snapshot s0.2" {
		t.Fatalf("a replica reads a snapshot: %q, %v", data, err)
	}
	if err := replica.nc.Publish(broker.ConsentStateSubject("s0", "clio"), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	replica.expectDenied(t, "a replica publishes an entry", broker.ConsentStateSubject("s0", "clio"))
}
