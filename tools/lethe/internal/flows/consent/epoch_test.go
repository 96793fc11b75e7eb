package consent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/services/consent"
)

// epochItems is every (subject, purpose) the epoch tests ask about.
func epochItems(subjects []string) []*consentv1.CheckBatchItem {
	attrs := &consentv1.SubjectAttributes{Role: "teacher", Age: 15, Country: "DK"}
	var items []*consentv1.CheckBatchItem
	for _, s := range subjects {
		for _, p := range replicaPurposes {
			items = append(items, &consentv1.CheckBatchItem{SubjectId: s, PurposeId: p, Attributes: attrs})
		}
	}
	return items
}

// answersOf asks every item, a thousand a call, at least at revision min.
func answersOf(ctx context.Context, c consentv1.ConsentServiceClient, items []*consentv1.CheckBatchItem, min uint64) ([]*consentv1.Decision, error) {
	var out []*consentv1.Decision
	for i := 0; i < len(items); i += 1000 {
		resp, err := c.CheckBatch(ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: items[i:min2(i+1000, len(items))], MinRevision: min})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.Decisions...)
	}
	return out, nil
}

// watchFrom starts a Watch of Clio after revision after on the writer and
// returns its refusal, or nil once it has sent what it holds after it.
func watchFrom(f *fixture, after uint64) error {
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	w, err := f.consent.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: after})
	if err != nil {
		return err
	}
	_, err = w.Recv()
	return err
}

// sameDecision compares what a decision says, not where it was made.
func sameDecision(a, b *consentv1.Decision) bool {
	return a.Allowed == b.Allowed && a.Reason == b.Reason && a.BasisId == b.BasisId
}

// removeIndexSnapshot removes the writer's index snapshot from its data
// folder, as a restore of the whole volume from a backup that holds none
// does: the writer then finds its history behind only from what it
// published.
func (f *fixture) removeIndexSnapshot(t *testing.T) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.host.DataDir, "consent.index")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// converges waits until the replica answers every item as the writer
// does now, at the writer's revision last, and fails the test on any
// other answer on the way: a refusal other than REPLICA_BEHIND, or a
// decision that is not the writer's (the one of the history the restore
// undid above all). It returns how often the replica refused.
func converges(t *testing.T, f *fixture, r *replica, items []*consentv1.CheckBatchItem, last uint64, old []*consentv1.Decision) int {
	t.Helper()
	want, err := answersOf(f.ctx, f.consent, items, 0)
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	eventually.Succeeds(t, "the replica answers as the restored writer", func() error {
		got, err := answersOf(f.ctx, r.client, items, last)
		if err != nil {
			if reason := reasonOf(err); reason != apierror.ReasonReplicaBehind {
				t.Fatalf("the replica refused with %s (%v), want %s", reason, err, apierror.ReasonReplicaBehind)
			}
			refused++
			return err
		}
		for i, w := range want {
			if !sameDecision(got[i], w) {
				t.Fatalf("%s/%s at revision %d: the replica answered %v %s %s, the writer %v %s %s (before the restore %v %s %s)",
					w.SubjectId, w.PurposeId, last, got[i].Allowed, got[i].Reason, got[i].BasisId, w.Allowed, w.Reason, w.BasisId,
					old[i].Allowed, old[i].Reason, old[i].BasisId)
			}
		}
		return nil
	})
	return refused
}

// watchInBetween asks the replica for items over and over until the
// returned stop is called. An answer asked for once the replica had seen
// its writer's epoch change for the changes-th time must be a
// REPLICA_BEHIND refusal or come from the new epoch, whose revisions are
// past undoneTo, which the undone history reached. stop returns how
// often it was refused, and the first answer that broke the rule.
func watchInBetween(f *fixture, r *replica, items []*consentv1.CheckBatchItem, changes int64, undoneTo uint64) (stop func() (int, error)) {
	done := make(chan struct{})
	type result struct {
		refused int
		err     error
	}
	out := make(chan result, 1)
	go func() {
		refused := 0
		for {
			select {
			case <-done:
				out <- result{refused, nil}
				return
			default:
			}
			// Read before the call: the replica counts an epoch change
			// after it stopped answering for the old one.
			noticed := r.replica().Stats().EpochChanges >= changes
			resp, err := r.client.CheckBatch(f.ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: items})
			switch {
			case !noticed:
			case err != nil && reasonOf(err) == apierror.ReasonReplicaBehind:
				refused++
			case err != nil:
				out <- result{refused, err}
				return
			case resp.Revision <= undoneTo:
				out <- result{refused, fmt.Errorf("after the epoch change the replica answered at revision %d, from the undone history", resp.Revision)}
				return
			}
		}
	}()
	return func() (int, error) {
		close(done)
		r := <-out
		return r.refused, r.err
	}
}

// A writer restored from a backup would reuse the revisions its replicas
// already applied, for other changes. It finds its history behind what
// it published, starts a new epoch and skips past every revision
// published, so that a token of the new epoch is never answered from the
// undone history by a replica still on the old one; a replica that sees the epoch
// answers REPLICA_BEHIND, never the undone history (a grant made after
// the backup and lost with it must not be answered "allowed": Art. 7(1),
// the controller must be able to show the consent), restores the new
// epoch's snapshot by itself and answers as the restored writer for
// every (subject, purpose). A second restore of the same backup starts
// yet another epoch; a restart without a restore keeps the epoch.
func TestARestoredWriterStartsAnEpochItsReplicasFollow(t *testing.T) {
	f := start(t)
	backups := f.withBackups(t)
	clio(t, f)
	rng := rand.New(rand.NewPCG(20, 7))
	subjects := subjectNames("e", 300)
	f.write(t, rng, subjects)
	f.drained(t)
	if err := f.svc.BackupNow(); err != nil {
		t.Fatal(err)
	}
	backedUp := f.revision(t)
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 20 * time.Millisecond})
	items := epochItems(subjects)

	// After the backup: a history the restore will undo, which the
	// replica applies.
	undone := func(seed uint64) []*consentv1.Decision {
		t.Helper()
		f.write(t, rand.New(rand.NewPCG(seed, 1)), subjects)
		last := f.revision(t)
		eventually.True(t, "the replica applies the history after the backup", func() bool { return r.replica().Revision("clio") >= last })
		sameAnswers(t, f.consent, r.client, subjects, last)
		old, err := answersOf(f.ctx, r.client, items, last)
		if err != nil {
			t.Fatal(err)
		}
		return old
	}
	// restored puts the backup back, starts the writer on it and, at once
	// (within JetStream's duplicate window of the entries published
	// before), writes a history of its own after the undone one's
	// revisions; it returns the writer's revision after it.
	restored := func(seed uint64, undoneTo uint64, wantEpoch uint64, old []*consentv1.Decision) uint64 {
		t.Helper()
		stop := watchInBetween(f, r, items[:500], int64(wantEpoch), undoneTo)
		defer func() {
			refused, err := stop()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("restore %d: the replica refused %d calls between seeing the new epoch and serving it", wantEpoch, refused)
		}()
		f.restoreFrom(t, backups)
		f.removeIndexSnapshot(t)
		metrics := f.restart(t)
		if n := metricValue(t, metrics, "lethe.consent.replication.epochs_started"); n != 1 {
			t.Fatalf("the restored writer started %d epochs, want 1", n)
		}
		first := f.revision(t)
		if first <= undoneTo {
			t.Fatalf("the restored writer is at revision %d, the undone history reached %d: a token would name two states", first, undoneTo)
		}
		// A token of the new epoch, asked of a replica that may still
		// hold the undone history: never answered from it.
		converges(t, f, r, items, first, old)
		// A watcher that took the undone changes is told so rather than
		// resumed past them (and may watch again from the backup's
		// revision, below).
		if reason, md := infoOf(watchFrom(f, undoneTo)); reason != apierror.ReasonHistoryUndone ||
			md["undone_after"] != fmt.Sprint(backedUp) || md["undone_through"] != fmt.Sprint(undoneTo) {
			t.Fatalf("Watch after undone revision %d: %s %v, want %s of (%d, %d]", undoneTo, reason, md, apierror.ReasonHistoryUndone, backedUp, undoneTo)
		}
		f.write(t, rand.New(rand.NewPCG(seed, 2)), subjects[:80])
		if err := watchFrom(f, backedUp); err != nil {
			t.Fatalf("Watch after the backup's revision %d: %v", backedUp, err)
		}
		last := f.revision(t)
		if last <= first {
			t.Fatalf("the new history ends at revision %d, not after the restored writer's %d", last, first)
		}
		eventually.True(t, "the replica sees the new epoch", func() bool { return r.replica().Stats().EpochChanges == int64(wantEpoch) })
		return last
	}

	old := undone(1)
	undoneTo := f.revision(t)
	last := restored(2, undoneTo, 1, old)
	refused := converges(t, f, r, items, last, old)
	differ := 0
	now, _ := answersOf(f.ctx, f.consent, items, 0)
	for i := range now {
		if !sameDecision(now[i], old[i]) {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("the restored writer answers every item as the undone history did: the test proves nothing")
	}
	sameAnswers(t, f.consent, r.client, subjects, last)
	if st := r.replica().Stats(); st.Epoch != 1 || st.Restores != 1 {
		t.Fatalf("replica stats %+v: want epoch 1 after one restore", st)
	}
	t.Logf("first restore: %d answers differ from the undone history; the replica refused %d times on the way", differ, refused)

	// The same backup again: its epoch is 0, the shard published 1.
	old = undone(3)
	undoneTo = f.revision(t)
	last = restored(4, undoneTo, 2, old)
	converges(t, f, r, items, last, old)
	if st := r.replica().Stats(); st.Epoch != 2 || st.Restores != 2 {
		t.Fatalf("replica stats %+v: want epoch 2 after the second restore", st)
	}

	// A restart without a restore keeps the epoch: nothing for the
	// replica to restore, and its revisions go on.
	f.stopConsent()
	metrics := f.restart(t)
	if n := metricValue(t, metrics, "lethe.consent.replication.epochs_started"); n > 0 {
		t.Fatalf("a restart without a restore started %d epochs", n)
	}
	f.record(t, "clio", subjects[0], "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	last = f.revision(t)
	eventually.True(t, "the replica applies the change after the restart", func() bool { return r.replica().Revision("clio") >= last })
	sameAnswers(t, f.consent, r.client, subjects, last)
	if st := r.replica().Stats(); st.Epoch != 2 || st.Restores != 2 || st.EpochChanges != 2 {
		t.Fatalf("replica stats %+v after a restart without a restore: want epoch 2, no further restore", st)
	}
}

// A replica that sees an epoch later than any snapshot in the bucket has
// nothing it can vouch for: it answers REPLICA_BEHIND for every tenant of
// the shard, and a newer snapshot of its own epoch does not bring it
// back. The writer, restarted, finds the later epoch published and starts
// the one after it; the replica restores that and answers again.
func TestAReplicaFailsClosedUntilTheNewEpochsSnapshot(t *testing.T) {
	f := start(t)
	clio(t, f)
	rng := rand.New(rand.NewPCG(20, 9))
	subjects := subjectNames("h", 100)
	f.write(t, rng, subjects)
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 20 * time.Millisecond})
	last := f.revision(t)
	sameAnswers(t, f.consent, r.client, subjects, last)
	// An entry of epoch 1 on Clio's NATS subject, as a writer of the shard
	// restored elsewhere would publish it.
	e, err := proto.Marshal(&consentv1.ReplicationEntry{TenantId: "clio", Epoch: 1, Change: &consentv1.Change{Revision: last + 1,
		Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_EXPIRED, SubjectId: subjects[0], At: timestamppb.New(f.clock.Now())}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.host.JetStream.Publish(f.ctx, broker.ConsentStateSubject(consent.DefaultShard, "clio"), e); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the replica sees epoch 1", func() bool { return r.replica().Stats().EpochChanges == 1 })
	refusedAll := func() {
		t.Helper()
		_, err := answersOf(f.ctx, r.client, epochItems(subjects), 0)
		if reason := reasonOf(err); reason != apierror.ReasonReplicaBehind {
			t.Fatalf("the replica answered with %v, want %s", err, apierror.ReasonReplicaBehind)
		}
	}
	refusedAll()
	if _, err := f.svc.Snapshot(f.ctx); err != nil {
		t.Fatal(err)
	}
	// Two looks for a snapshot after this one was written: the first may
	// have begun before.
	failed := r.replica().Stats().FailedRestores
	eventually.True(t, "the replica looks at the new snapshot of epoch 0", func() bool { return r.replica().Stats().FailedRestores >= failed+2 })
	refusedAll()
	f.stopConsent()
	metrics := f.restart(t)
	if n := metricValue(t, metrics, "lethe.consent.replication.epochs_started"); n != 1 {
		t.Fatalf("the writer started %d epochs, want 1", n)
	}
	eventually.True(t, "the replica restores epoch 2", func() bool { return r.replica().Stats().Epoch == 2 })
	sameAnswers(t, f.consent, r.client, subjects, f.revision(t))
	// Epoch 2 superseded the state of epoch 0 as epoch 1 had: one change.
	if st := r.replica().Stats(); st.Restores != 1 || st.EpochChanges != 1 {
		t.Fatalf("replica stats %+v: want one restore, of epoch 2", st)
	}
}

// A tenant's newest entry on the stream may be its country, which is no
// change of its log: it carries the tenant's revision, so that a writer
// restored from a backup taken before the tenant's last changes still
// finds its history behind and starts an epoch.
func TestARestoreIsFoundWhenACountryIsTheNewestEntry(t *testing.T) {
	f := start(t)
	backups := f.withBackups(t)
	clio(t, f)
	rng := rand.New(rand.NewPCG(20, 11))
	subjects := subjectNames("c", 40)
	f.write(t, rng, subjects[:20])
	f.drained(t)
	if err := f.svc.BackupNow(); err != nil {
		t.Fatal(err)
	}
	f.write(t, rng, subjects[20:])
	if _, err := f.registry.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "clio", Settings: &registryv1.TenantSettings{Country: "DE"}}}); err != nil {
		t.Fatal(err)
	}
	last := f.revision(t)
	stream, err := f.host.JetStream.Stream(f.ctx, broker.ConsentStateStreamName)
	if err != nil {
		t.Fatal(err)
	}
	eventually.Succeeds(t, "the country is the newest entry on Clio's NATS subject", func() error {
		msg, err := stream.GetLastMsgForSubject(f.ctx, broker.ConsentStateSubject(consent.DefaultShard, "clio"))
		if err != nil {
			return err
		}
		data := msg.Data
		if msg.Header.Get(outbox.HeaderBatch) != "" {
			parts, err := outbox.SplitBatch(data)
			if err != nil {
				return err
			}
			data = parts[len(parts)-1]
		}
		e := &consentv1.ReplicationEntry{}
		if err := proto.Unmarshal(data, e); err != nil {
			return err
		}
		if e.GetCountry().GetCountry() != "DE" || e.GetCountry().GetRevision() != last {
			return fmt.Errorf("newest entry %v, want the country DE at revision %d", e, last)
		}
		return nil
	})
	f.restoreFrom(t, backups)
	f.removeIndexSnapshot(t)
	metrics := f.restart(t)
	if n := metricValue(t, metrics, "lethe.consent.replication.epochs_started"); n != 1 {
		t.Fatalf("the restored writer started %d epochs, want 1", n)
	}
}
