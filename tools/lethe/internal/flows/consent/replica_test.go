package consent_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/services/consent"
)

// replica runs a read replica of the fixture's writer on its own host
// (own listener, own data folder), beside it on the writer's NATS server,
// as a replica pod runs beside the writer's.
type replica struct {
	host   *servicetest.Host
	client consentv1.ConsentServiceClient
	mu     sync.Mutex
	svc    *consent.Replica
}

func (f *fixture) startReplica(t testing.TB, opts consent.ReplicaOptions) *replica {
	t.Helper()
	r := &replica{}
	fac := service.Factory{Name: "consent-replica", New: func(d service.Deps) (service.Service, error) {
		svc, err := consent.NewReplica(d, opts)
		r.mu.Lock()
		r.svc = svc
		r.mu.Unlock()
		return svc, err
	}}
	r.host = servicetest.Start(t, servicetest.Options{Clock: f.host.Clock, Logger: quiet, Join: f.host}, fac)
	r.client = consentv1.NewConsentServiceClient(r.host.Conn)
	return r
}

func (r *replica) replica() *consent.Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc
}

var replicaPurposes = []string{"cookies.statistics", "marketing", "mail.transactional", "profiling", "courses.signup"}

// write records a generated history for the subjects: banner decisions
// (grants and denials), withdrawals, objections, restrictions applied and
// lifted; it returns the revision of the last write.
func (f *fixture) write(t *testing.T, rng *rand.Rand, subjects []string) uint64 {
	t.Helper()
	var last uint64
	optional := []string{"cookies.necessary", "cookies.statistics", "marketing", "courses.signup"}
	for _, s := range subjects {
		choice := consentv1.BannerChoice(1 + rng.IntN(3))
		req := &consentv1.RecordBannerDecisionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: s, Choice: choice, ShownPurposeIds: optional}
		if choice == consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED {
			req.SelectedPurposeIds = []string{optional[1+rng.IntN(3)]}
		}
		resp, err := f.consent.RecordBannerDecision(f.ctx, req)
		if err != nil {
			t.Fatalf("banner for %s: %v", s, err)
		}
		last = resp.Revision
		switch rng.IntN(10) {
		case 0:
			f.record(t, "clio", s, "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
			last = f.revision(t)
		case 1:
			o, err := f.consent.RecordObjection(f.ctx, &consentv1.RecordObjectionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: s,
				Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_LEGITIMATE_INTERESTS})
			if err != nil {
				t.Fatal(err)
			}
			last = o.Revision
		case 2, 3:
			a, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: s,
				Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED, PurposeIds: []string{"profiling"}})
			if err != nil {
				t.Fatal(err)
			}
			last = a.Revision
			if rng.IntN(2) == 0 {
				l, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio",
					RestrictionId: a.RestrictionId, SubjectInformedAt: timestamppb.New(f.clock.Now())})
				if err != nil {
					t.Fatal(err)
				}
				last = l.Revision
			}
		}
	}
	return last
}

// revision is the writer's revision of clio, read with a Check.
func (f *fixture) revision(t testing.TB) uint64 {
	t.Helper()
	resp, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "nobody", PurposeId: "marketing"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Revision
}

// sameAnswers compares every (subject, purpose) on the writer and the
// replica, the replica asked at least at revision min.
func sameAnswers(t *testing.T, writer, replica consentv1.ConsentServiceClient, subjects []string, min uint64) {
	t.Helper()
	ctx := context.Background()
	attrs := &consentv1.SubjectAttributes{Role: "teacher", Age: 15, Country: "DK"}
	var items []*consentv1.CheckBatchItem
	for _, s := range subjects {
		for _, p := range replicaPurposes {
			items = append(items, &consentv1.CheckBatchItem{SubjectId: s, PurposeId: p, Attributes: attrs})
		}
	}
	compared, allowed := 0, 0
	for i := 0; i < len(items); i += 1000 {
		batch := items[i:min2(i+1000, len(items))]
		want, err := writer.CheckBatch(ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: batch})
		if err != nil {
			t.Fatal(err)
		}
		got, err := replica.CheckBatch(ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: batch, MinRevision: min})
		if err != nil {
			t.Fatalf("replica at revision %d: %v", min, err)
		}
		for j, w := range want.Decisions {
			g := got.Decisions[j]
			if g.Allowed != w.Allowed || g.Reason != w.Reason || g.BasisId != w.BasisId {
				t.Fatalf("%s/%s: replica %v %s %s, writer %v %s %s", w.SubjectId, w.PurposeId, g.Allowed, g.Reason, g.BasisId, w.Allowed, w.Reason, w.BasisId)
			}
			compared++
			if w.Allowed {
				allowed++
			}
		}
	}
	// A data set that allows everything or nothing would prove little.
	if allowed == 0 || allowed == compared {
		t.Fatalf("%d of %d answers allowed: the data set does not discriminate", allowed, compared)
	}
}

func min2(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func subjectNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// A replica started late restores the writer's snapshot, follows the
// stream and answers exactly as the writer does for every (subject,
// purpose) of a generated data set: grants, denials, withdrawals,
// objections, restrictions applied and lifted, and expiries (Art. 7(3):
// a withdrawal must stop processing wherever Check is asked).
func TestReplicaStartedLateAnswersAsTheWriter(t *testing.T) {
	f := start(t)
	clio(t, f)
	rng := rand.New(rand.NewPCG(20, 1))
	subjects := subjectNames("s", 2000)
	f.write(t, rng, subjects[:1000])
	if _, err := f.svc.Snapshot(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.write(t, rng, subjects[1000:1500])
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	// Written while the replica follows; then a year passes and the
	// statistics consents expire (CONSENT_EXPIRED changes).
	f.write(t, rng, subjects[1500:])
	f.clock.Advance(366 * 24 * time.Hour)
	expired, err := f.svc.ExpireDue(f.ctx)
	if err != nil || expired == 0 {
		t.Fatalf("expired %d, %v: the data set must expire consents", expired, err)
	}
	last := f.revision(t)
	sameAnswers(t, f.consent, r.client, subjects, last)
	st := r.replica().Stats()
	if st.Applied == 0 || st.Poison != 0 {
		t.Fatalf("replica stats %+v: it must have applied the stream's entries after the snapshot", st)
	}
}

// Snapshots taken while writers run are exact cuts of the writer's live
// index: a replica that restores the last of them and follows the stream
// answers as the writer does. Writers grant, renew (whose effect depends
// on the record it renews, so a change applied twice or out of order
// shows), withdraw, object and restrict concurrently with five
// snapshots; the replica must skip the entries its snapshot already holds
// and apply every other exactly once.
func TestSnapshotsTakenDuringWritesAreExactCuts(t *testing.T) {
	f := start(t)
	clio(t, f)
	subjects := subjectNames("c", 300)
	f.write(t, rand.New(rand.NewPCG(20, 3)), subjects)
	actions := []consentv1.ConsentAction{consentv1.ConsentAction_CONSENT_ACTION_GRANT, consentv1.ConsentAction_CONSENT_ACTION_RENEW,
		consentv1.ConsentAction_CONSENT_ACTION_RENEW, consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(20, uint64(w)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio",
					SubjectId: subjects[rng.IntN(len(subjects))], PurposeId: replicaPurposes[rng.IntN(2)], Action: actions[rng.IntN(len(actions))],
					Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
				if err == nil && i%7 == 0 {
					_, err = f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio",
						SubjectId: subjects[rng.IntN(len(subjects))], Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED,
						PurposeIds: []string{"profiling"}})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var taken []uint64
	for range 5 {
		before := f.revision(t)
		info, err := f.svc.Snapshot(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each snapshot waits for writes committed after the last, so
		// that every one is taken among writes.
		eventually.True(t, "writes go on between snapshots", func() bool { return f.revision(t) > before+20 })
		taken = append(taken, info.StreamSequence)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	sameAnswers(t, f.consent, r.client, subjects, f.revision(t))
	st := r.replica().Stats()
	if st.Applied == 0 || st.Poison != 0 {
		t.Fatalf("replica stats %+v after snapshots at stream sequences %v: it must have applied the entries after its snapshot", st, taken)
	}
	t.Logf("replica after snapshots at stream sequences %v: %+v", taken, st)
}

// A Check with the revision a write returned never sees the state before
// the write, on a replica, with writers and readers running concurrently.
func TestReadYourWritesOnAReplica(t *testing.T) {
	f := start(t)
	clio(t, f)
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			subject := fmt.Sprintf("ryw-%d", w)
			for i := range 40 {
				action, want := consentv1.ConsentAction_CONSENT_ACTION_GRANT, true
				if i%2 == 1 {
					action, want = consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, false
				}
				resp, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio", SubjectId: subject,
					PurposeId: "marketing", Action: action, Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
				if err != nil {
					errs <- err
					return
				}
				got, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: subject, PurposeId: "marketing",
					MinRevision: resp.Revision})
				if err != nil {
					errs <- fmt.Errorf("check at revision %d: %w", resp.Revision, err)
					return
				}
				if got.Decision.Allowed != want || got.Revision < resp.Revision {
					errs <- fmt.Errorf("%s after %s (revision %d): allowed %v at revision %d", subject, action, resp.Revision, got.Decision.Allowed, got.Revision)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A replica killed and restarted resumes from the local copy of the
// snapshot it restored: it applies only the entries written after that
// snapshot, not the writer's whole history again.
func TestReplicaRestartResumesFromItsSnapshot(t *testing.T) {
	f := start(t)
	clio(t, f)
	rng := rand.New(rand.NewPCG(20, 3))
	subjects := subjectNames("r", 600)
	f.write(t, rng, subjects[:400])
	if _, err := f.svc.Snapshot(f.ctx); err != nil {
		t.Fatal(err)
	}
	covered := f.revision(t)
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	if st := r.replica().Stats(); st.Applied != 0 {
		t.Fatalf("the replica applied %d entries at start, want 0: the snapshot covers revision %d", st.Applied, covered)
	}
	f.write(t, rng, subjects[400:])
	last := f.revision(t)
	r.host.Restart(t)
	// Only what came after the snapshot, each once.
	sameAnswers(t, f.consent, r.client, subjects, last)
	if st := r.replica().Stats(); st.Applied != int64(last-covered) {
		t.Fatalf("after the restart the replica applied %d entries, want the %d written after its snapshot (revision %d of %d)",
			st.Applied, last-covered, covered, last)
	}
}

// With its writer down a replica keeps answering, and its lag, measured
// from the writer's last heartbeat, grows visibly.
func TestWriterDownLeavesReplicasAnswering(t *testing.T) {
	f := start(t)
	clio(t, f)
	r := f.startReplica(t, consent.ReplicaOptions{})
	grant := f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	rev := f.revision(t)
	f.stopConsent()
	lag0 := r.replica().Lag()
	f.clock.Advance(30 * time.Second)
	lag1 := r.replica().Lag()
	f.clock.Advance(30 * time.Second)
	lag2 := r.replica().Lag()
	if !(lag1 >= lag0+30*time.Second && lag2 >= lag1+30*time.Second) {
		t.Fatalf("lag %s, %s, %s with the writer down: it must grow with the time since the writer's last heartbeat", lag0, lag1, lag2)
	}
	resp, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", MinRevision: rev})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Decision.Allowed || resp.Decision.BasisId != grant.RecordId {
		t.Fatalf("the replica answered %v (basis %s), want the grant %s", resp.Decision.Allowed, resp.Decision.BasisId, grant.RecordId)
	}
}

// revisionOf returns the reason and the "revision" metadata of a refusal.
func revisionOf(t *testing.T, err error) (string, string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		t.Fatalf("error %v, want FailedPrecondition", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason, info.Metadata["revision"]
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return "", ""
}

// A replica asked for a revision it does not reach within its bound
// refuses with REPLICA_BEHIND naming the revision it holds, rather than
// answer from an older state; a replica refuses writes (READ_ONLY_REPLICA)
// and past-time checks, which only the writer can answer.
func TestABehindReplicaRefusesRatherThanAnswerStale(t *testing.T) {
	f := start(t)
	clio(t, f)
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 100 * time.Millisecond})
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	rev := f.revision(t)
	if _, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", MinRevision: rev}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	_, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", MinRevision: rev + 1})
	reason, held := revisionOf(t, err)
	if reason != apierror.ReasonReplicaBehind || held != fmt.Sprint(rev) {
		t.Fatalf("refusal %s at revision %s, want %s at %d", reason, held, apierror.ReasonReplicaBehind, rev)
	}
	if waited := time.Since(began); waited < 100*time.Millisecond {
		t.Fatalf("refused after %s, want after waiting the bound (100ms)", waited)
	}
	// The writer refuses a token beyond its own revision the same way.
	_, err = f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", MinRevision: rev + 1})
	if reason, _ := revisionOf(t, err); reason != apierror.ReasonReplicaBehind {
		t.Fatalf("the writer refused with %s", reason)
	}
	_, err = r.client.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
		PurposeId: "marketing", Action: consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
	if reason, _ := revisionOf(t, err); reason != apierror.ReasonReadOnlyReplica {
		t.Fatalf("a write on the replica was refused with %s, want %s", reason, apierror.ReasonReadOnlyReplica)
	}
	_, err = r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", At: timestamppb.New(f.clock.Now())})
	if reason, _ := revisionOf(t, err); reason != apierror.ReasonReadOnlyReplica {
		t.Fatalf("a past-time check on the replica was refused with %s", reason)
	}
}

// An undecodable entry on one tenant's NATS subject is counted and makes
// that tenant (only) answer REPLICA_BEHIND, fail closed, until a snapshot
// taken after it is restored; the other tenants go on being served.
func TestAPoisonEntryIsIsolatedToItsTenant(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.tenant(t, "other")
	f.purpose(t, "other", &consentv1.Purpose{PurposeId: "marketing", Name: "Marketing", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	if _, err := f.host.JetStream.Publish(f.ctx, broker.ConsentStateSubject(consent.DefaultShard, "other"), []byte{0xff, 0x01, 0x02}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the replica counts the poison entry", func() bool { return r.replica().Stats().Poison == 1 })
	_, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "other", SubjectId: "ada", PurposeId: "marketing"})
	if reason, _ := revisionOf(t, err); reason != apierror.ReasonReplicaBehind {
		t.Fatalf("the poisoned tenant answered with %v, want %s", err, apierror.ReasonReplicaBehind)
	}
	// Clio is served as before, with its new writes.
	rec := f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	resp, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing", MinRevision: f.revision(t)})
	if err != nil || resp.Decision.BasisId != rec.RecordId {
		t.Fatalf("clio on the replica: %v, %v", resp, err)
	}
	// A snapshot taken after the poison entry restores the tenant.
	if _, err := f.svc.Snapshot(f.ctx); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the poisoned tenant is served again after a newer snapshot", func() bool {
		_, err := r.client.Check(f.ctx, &consentv1.CheckRequest{TenantId: "other", SubjectId: "ada", PurposeId: "marketing"})
		return err == nil
	})
	if st := r.replica().Stats(); st.Restores != 1 {
		t.Fatalf("restores %d, want 1", st.Restores)
	}
}

// Watch on a replica sends the changes it keeps, then new ones, and tells
// a caller resuming from before them to ask the writer.
func TestWatchOnAReplica(t *testing.T) {
	f := start(t)
	clio(t, f)
	// The replica starts from a snapshot holding Clio's purposes: it keeps
	// none of the changes that declared them.
	if _, err := f.svc.Snapshot(f.ctx); err != nil {
		t.Fatal(err)
	}
	r := f.startReplica(t, consent.ReplicaOptions{RevisionWait: 10 * time.Second})
	from := f.revision(t)
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	stream, err := r.client.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: from})
	if err != nil {
		t.Fatal(err)
	}
	rec := f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Changes[0]; c.Revision != from+1 || c.BasisId != rec.RecordId {
		t.Fatalf("change %v, want revision %d for record %s", c, from+1, rec.RecordId)
	}
	old, err := r.client.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: 0})
	if err == nil {
		_, err = old.Recv()
	}
	if reason, _ := revisionOf(t, err); reason != apierror.ReasonReadOnlyReplica {
		t.Fatalf("a watch from revision 0 was refused with %s", reason)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("timed out")
	}
}
