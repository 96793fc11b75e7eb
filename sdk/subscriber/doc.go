// Package subscriber connects a system that holds personal data (a
// newsletter database, a CRM) to Lethe: it receives the system's events
// from NATS JetStream, hands each to the system's handler once, and
// reports the handler's outcome back to Lethe.
//
// A system registers one [Handler] per kind of event it answers — the
// directives (erasure, rectification, access) and limits (consent
// withdrawn, objection, restriction applied and lifted) of
// [contract.Directives] and [contract.Limits] — and runs a [Subscriber]:
//
//	l, err := ledger.Open("newsletter.db", ledger.Options{})
//	if err != nil { ... }
//	defer l.Close()
//
//	sub, err := subscriber.New(subscriber.Config{
//		SystemID:  "newsletter",
//		Tenant:    "clio",
//		JetStream: js,
//		Ledger:    l,
//		Handlers: map[contract.Kind]subscriber.Handler{
//			contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
//				found, err := store.Delete(ctx, ev.SubjectID())
//				if err != nil {
//					return subscriber.Outcome{}, err // transient: delivered again later
//				}
//				if !found {
//					return subscriber.NotFound(), nil
//				}
//				return subscriber.Erased(), nil
//			},
//		},
//	})
//	if err != nil { ... }
//	err = sub.Run(ctx) // until ctx ends
//
// # What the subscriber guarantees
//
// The system reads through its own durable consumers on the LETHE stream,
// one per kind it has a handler for, named after the system, the tenant and
// the kind ([contract.KindConsumerName]) and filtered to that kind's subject
// alone. For each event it:
//
//  1. decodes it; an event that cannot be decoded, lacks an id or cause,
//     or arrived on another subject than its own is terminated and logged:
//     no delivery can fix it;
//  2. looks its id up in the [ledger.Ledger]; a duplicate (JetStream
//     delivers at least once, and Lethe re-sends unanswered events) is
//     answered by re-sending the outcome recorded for it;
//  3. answers a restriction event older than one already answered for the
//     same restriction NOT_APPLICABLE without calling the handler, so
//     that a "restriction lifted" overtaken by the older "restriction
//     applied" leaves the subject unrestricted;
//  4. calls the handler, records its outcome in the ledger, publishes it
//     on the system's outcome subject ([contract.OutcomeSubject]) and
//     waits for the stream to store it, and only then acknowledges the
//     event. The worker does not wait for the store: it hands the
//     recorded outcome to the system's publisher and takes the next
//     event, and the publisher acknowledges the event (or gives it back)
//     once the stream has answered, keeping it in progress until then.
//
// A handler's error means "try again": the event is delivered again after
// [Config.BackOff], jittered. On its last allowed delivery
// ([Config.MaxDeliver]) the subscriber reports it FAILED with the error's
// text instead, so the task fails where operators see it and is never
// silently dropped.
//
// A system that takes an event and answers it later (a webhook receiver
// that answered 202) has its handler return [AnswerLater] with a
// deadline: the event is acknowledged and kept in the ledger until
// [Subscriber.Answer] reports the outcome, or reported FAILED once the
// deadline has passed.
//
// # Exactly once
//
// A crash between a handler's change and the ledger's record would make
// the redelivered event run the handler again. A system whose data lives
// in bbolt closes that window by keeping its data in the ledger's database
// and recording the outcome in the transaction that makes the change,
// with [Event.Record]:
//
//	var out subscriber.Outcome
//	err := l.DB().Update(func(tx *bbolt.Tx) error {
//		out = subscriber.NotFound()
//		if b := tx.Bucket(subscribers); b.Get(key) != nil {
//			if err := b.Delete(key); err != nil {
//				return err
//			}
//			out = subscriber.Erased()
//		}
//		return ev.Record(tx, out)
//	})
//	return out, err
//
// Other stores get the same effect by making their changes idempotent.
//
// # After a restore from a backup
//
// A system that restores its data from a backup taken before an erasure
// has the erased subject back, and its consumers have moved past the
// directive. Lethe keeps every erasure directive in an erasure ledger
// ([contract.ErasureLedgerStream], 400 days by default) for this: before
// Run, replay the erasures made since the backup, with a margin of a few
// minutes:
//
//	res, err := sub.ReplayErasures(ctx, backupTime.Add(-5*time.Minute))
//	if err != nil { ... } // do not serve the restored data yet
//	err = sub.Run(ctx)
//
// The replay hands each erasure of the system's tenant to the erasure
// handler again and publishes nothing: Lethe's tasks were closed by the
// first answer. A handler that records with [Event.Record] in the file
// that holds its data and its ledger recognises an erasure made before
// the backup (Record returns [ledger.ErrRecorded]) and leaves the data
// that came after it, such as a subject who signed up again, alone.
// [Subscriber.ReplayErasures] says more.
//
// # Connecting to NATS
//
// In production each system and tenant has its own NATS user, named
// "<system>@<tenant>" (deploy/nats/auth.conf), which may publish only the
// system's outcomes, create and read only the system's consumers, each
// only with its own tenant's filter, and receive replies only under the
// inbox prefix "_INBOX.<system>@<tenant>". Connect with that user and
// prefix; with the default "_INBOX" prefix no reply would reach the system:
//
//	nc, err := nats.Connect(url,
//		nats.UserInfo("newsletter@clio", password), // the password from a file, never a flag
//		nats.CustomInboxPrefix("_INBOX.newsletter@clio"),
//		nats.RootCAs("ca.crt"), nats.ClientCert("tls.crt", "tls.key"))
//	js, err := jetstream.New(nc)
//
// One consumer per kind is what lets the server hold the system to its
// tenant: it checks a consumer's filter against the user's permissions only
// when the filter is part of the creation request's subject, which a
// consumer with several filters cannot be (nats-server issue #6180).
// Events of different kinds therefore arrive in no particular order; the
// ordering check of step 3 does not depend on it.
//
// # Tracing
//
// Events carry the W3C trace context of the change that caused them; the
// handler's context continues that trace, and outcomes carry it back.
package subscriber
