package consent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
	"github.com/lethe-privacy/lethe/services/consent"
)

// snapshotPurposes are clio's purposes (see clio).
var snapshotPurposes = []string{"cookies.necessary", "cookies.statistics", "marketing", "mail.transactional", "profiling", "courses.signup"}

// snapshotAttributes are asked with every subject and purpose: none, an
// excluded role, and an age the Danish age of digital consent decides.
var snapshotAttributes = []*consentv1.SubjectAttributes{nil, {Role: "student"}, {Age: 14, Country: "DK"}, {Gpc: true}}

// history makes random changes to the subjects of a tenant with clio's
// purposes: grants, denials, withdrawals and renewals, objections,
// restrictions and lifts, with the clock moving so that grants expire.
type history struct {
	f            *fixture
	rng          *rand.Rand
	restrictions map[string][]string // tenant → open restriction ids
}

func (h *history) run(t *testing.T, tenant string, subjects []string, steps int) {
	t.Helper()
	consentPurposes := []string{"cookies.statistics", "marketing", "courses.signup"}
	actions := []consentv1.ConsentAction{consentv1.ConsentAction_CONSENT_ACTION_GRANT, consentv1.ConsentAction_CONSENT_ACTION_GRANT,
		consentv1.ConsentAction_CONSENT_ACTION_DENY, consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, consentv1.ConsentAction_CONSENT_ACTION_RENEW}
	for range steps {
		subject := subjects[h.rng.IntN(len(subjects))]
		switch n := h.rng.IntN(100); {
		case n < 80:
			h.f.record(t, tenant, subject, consentPurposes[h.rng.IntN(len(consentPurposes))], actions[h.rng.IntN(len(actions))])
		case n < 87:
			scopes := []eventsv1.ObjectionScope{eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING, eventsv1.ObjectionScope_OBJECTION_SCOPE_LEGITIMATE_INTERESTS}
			if _, err := h.f.consent.RecordObjection(h.f.ctx, &consentv1.RecordObjectionRequest{RequestId: h.f.id(), TenantId: tenant,
				SubjectId: subject, Scope: scopes[h.rng.IntN(len(scopes))]}); err != nil {
				t.Fatal(err)
			}
		case n < 94:
			var purposes []string
			if h.rng.IntN(2) == 0 {
				purposes = []string{"profiling"}
			}
			r, err := h.f.consent.ApplyRestriction(h.f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: h.f.id(), TenantId: tenant, SubjectId: subject,
				Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED, PurposeIds: purposes})
			if err != nil {
				t.Fatal(err)
			}
			h.restrictions[tenant] = append(h.restrictions[tenant], r.RestrictionId)
		default:
			open := h.restrictions[tenant]
			if len(open) == 0 {
				continue
			}
			h.f.clock.Advance(time.Minute)
			if _, err := h.f.consent.LiftRestriction(h.f.ctx, &consentv1.LiftRestrictionRequest{RequestId: h.f.id(), TenantId: tenant,
				RestrictionId: open[0], SubjectInformedAt: timestamppb.New(h.f.clock.Now().Add(-time.Second))}); err != nil {
				t.Fatal(err)
			}
			h.restrictions[tenant] = open[1:]
		}
		h.f.clock.Advance(time.Duration(h.rng.Int64N(int64(20 * 24 * time.Hour))))
	}
}

// decisions asks every subject and purpose of the tenants, with each of
// snapshotAttributes, and returns the answers as lines.
func (f *fixture) decisions(t *testing.T, tenants []string, subjects []string) []string {
	t.Helper()
	var out []string
	for _, tenant := range tenants {
		for _, subject := range subjects {
			req := &consentv1.CheckBatchRequest{TenantId: tenant}
			for _, p := range snapshotPurposes {
				for _, a := range snapshotAttributes {
					req.Items = append(req.Items, &consentv1.CheckBatchItem{SubjectId: subject, PurposeId: p, Attributes: a})
				}
			}
			resp, err := f.consent.CheckBatch(f.ctx, req)
			if err != nil {
				t.Fatalf("check %s/%s: %v", tenant, subject, err)
			}
			for i, d := range resp.Decisions {
				out = append(out, fmt.Sprintf("%s %s %s %v: %v %s %s", tenant, subject, d.PurposeId, req.Items[i].Attributes, d.Allowed, d.Reason, d.BasisId))
			}
		}
	}
	return out
}

// sameLines fails unless got equals want line by line.
func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d decisions, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: decision %d is\n  %s\nwant\n  %s", what, i, got[i], want[i])
		}
	}
}

// TestStartFromASnapshotAnswersAsAFullRead: the consent service writes its
// decision index to the data folder at a clean stop and starts from it,
// replaying only the changes committed after it. A kill -9 leaves
// consent.db with every commit and the snapshot as the last one written
// before them; the test builds exactly that (the snapshot of an earlier
// stop put back after later commits) and checks that the start from it
// answers every (subject, purpose) as before the stop and as a start that
// reads every record. A corrupt snapshot is refused, logged, and the
// start reads every record.
func TestStartFromASnapshotAnswersAsAFullRead(t *testing.T) {
	logs := &logbuf.Buffer{}
	f := startOn(t, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: slog.New(slog.NewTextHandler(logs, nil))}, nil)
	clio(t, f)
	h := &history{f: f, rng: rand.New(rand.NewPCG(20, 3)), restrictions: map[string][]string{}}
	subjects := make([]string, 30)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("subject-%02d", i)
	}
	h.run(t, "clio", subjects, 150)
	path := filepath.Join(f.host.DataDir, "consent.index")

	// A clean stop writes the snapshot.
	f.stopConsent()
	older, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no index snapshot after a clean stop: %v", err)
	}
	f.restart(t)
	loaded := func(fromSnapshot bool) string {
		t.Helper()
		lines := strings.Split(logs.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], "decision index loaded") {
				if !strings.Contains(lines[i], fmt.Sprintf("from_snapshot=%v", fromSnapshot)) {
					t.Fatalf("want from_snapshot=%v: %s", fromSnapshot, lines[i])
				}
				return lines[i]
			}
		}
		t.Fatal("no load logged")
		return ""
	}
	loaded(true)

	// More changes after the snapshot, in clio and in a tenant the
	// snapshot does not know.
	clevio := "clevio"
	f.tenant(t, clevio)
	purposes, err := f.consent.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: "clio"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range purposes.Purposes {
		f.purpose(t, clevio, p)
	}
	h.run(t, "clio", subjects, 120)
	h.run(t, clevio, subjects[:10], 40)
	tenants := []string{"clio", clevio}
	before := f.decisions(t, tenants, subjects)

	// The kill -9: every commit is in consent.db, the snapshot is the
	// earlier one.
	f.stopConsent()
	if err := os.WriteFile(path, older, 0o600); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	line := loaded(true)
	if strings.Contains(line, "changes_replayed=0 ") {
		t.Fatalf("nothing replayed: %s", line)
	}
	sameLines(t, "from the snapshot", f.decisions(t, tenants, subjects), before)

	// Without a snapshot: every record read, the same answers.
	f.stopConsent()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	loaded(false)
	sameLines(t, "from every record", f.decisions(t, tenants, subjects), before)

	// A corrupt snapshot is refused: every record read again.
	f.stopConsent()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	loaded(false)
	if !strings.Contains(logs.String(), "index snapshot is unusable") {
		t.Error("the corrupt snapshot was not logged")
	}
	sameLines(t, "after a corrupt snapshot", f.decisions(t, tenants, subjects), before)
}

// TestTheChangeLogIsTrimmedBehindTheSnapshot: a change older than
// --changes-kept-for leaves its tenant's log once the index snapshot in
// the data folder covers it, and not before. A Watch resuming before what
// is kept is refused with HISTORY_TRIMMED naming the last revision gone,
// one from 0 starts at the oldest kept, and a start from a snapshot
// older than the trim (one put back by hand) reads every record instead
// of replaying a log with a hole.
func TestTheChangeLogIsTrimmedBehindTheSnapshot(t *testing.T) {
	logs := &logbuf.Buffer{}
	f := startOn(t, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: slog.New(slog.NewTextHandler(logs, nil))}, nil)
	clio(t, f)
	subjects := []string{"ada", "bob", "cy", "dee"}
	path := filepath.Join(f.host.DataDir, "consent.index")
	snapshotAt := func() []byte {
		t.Helper()
		f.stopConsent()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	older := snapshotAt() // of clio's purposes only
	f.restart(t)
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "bob", "marketing", consentv1.ConsentAction_CONSENT_ACTION_DENY)
	covered := f.revision(t)
	snapshotAt()
	reader := f.restart(t)
	f.record(t, "clio", "cy", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.clock.Advance(consent.DefaultChangesKeptFor + time.Hour)
	f.record(t, "clio", "dee", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)

	// Every change up to covered is old enough and in the snapshot; cy's
	// is old enough but only in the log.
	if n, err := f.svc.TrimChanges(f.ctx); err != nil || n != int(covered) {
		t.Fatalf("TrimChanges = %d, %v; want the %d changes the snapshot covers", n, err, covered)
	}
	if n, err := f.svc.TrimChanges(f.ctx); err != nil || n != 0 {
		t.Fatalf("a second TrimChanges = %d, %v; want nothing", n, err)
	}
	if got := metricValue(t, reader, "lethe.consent.changes_trimmed"); got != int64(covered) {
		t.Errorf("lethe.consent.changes_trimmed = %d, want %d", got, covered)
	}
	trimmedBefore := func(what string, after uint64) {
		t.Helper()
		reason, md := infoOf(watchFrom(f, after))
		if reason != apierror.ReasonHistoryTrimmed || md["trimmed_through"] != fmt.Sprint(covered) {
			t.Fatalf("%s: Watch after revision %d: %s %v, want %s through %d", what, after, reason, md, apierror.ReasonHistoryTrimmed, covered)
		}
	}
	trimmedBefore("after the trim", 1)
	firstKept := func(after uint64) {
		t.Helper()
		ctx, cancel := context.WithCancel(f.ctx)
		defer cancel()
		w, err := f.consent.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: after})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("Watch after revision %d: %v", after, err)
		}
		if c := resp.Changes[0]; c.Revision != covered+1 || c.SubjectId != "cy" {
			t.Fatalf("Watch after revision %d starts at %d (%s), want cy's at %d", after, c.Revision, c.SubjectId, covered+1)
		}
	}
	firstKept(0)
	firstKept(covered)
	before := f.decisions(t, []string{"clio"}, subjects)

	// A clean stop and start keeps the trim, and answers from the
	// snapshot as before.
	snapshotAt()
	f.restart(t)
	trimmedBefore("after a restart", covered-1)
	sameLines(t, "after a restart", f.decisions(t, []string{"clio"}, subjects), before)

	// A snapshot older than the trim cannot be replayed: every record is
	// read.
	f.stopConsent()
	if err := os.WriteFile(path, older, 0o600); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	if !strings.Contains(logs.String(), "cannot replay the changes after the index snapshot") ||
		!strings.Contains(logs.String(), fmt.Sprintf("the changes up to %d are trimmed", covered)) {
		t.Fatal("the start replayed a trimmed log")
	}
	sameLines(t, "from every record", f.decisions(t, []string{"clio"}, subjects), before)
}

// TestAPoisonChangeStopsNeitherTheTrimNorTheStart: one tenant's change
// that cannot be decoded (a damaged page of consent.db) is named in the
// trim's error while every other tenant's log is trimmed, and a start
// that would replay it reads every record instead, answering as before.
func TestAPoisonChangeStopsNeitherTheTrimNorTheStart(t *testing.T) {
	logs := &logbuf.Buffer{}
	f := startOn(t, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: slog.New(slog.NewTextHandler(logs, nil))}, nil)
	clio(t, f)
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	clioRevision := f.revision(t)
	path := filepath.Join(f.host.DataDir, "consent.index")
	f.stopConsent()
	older, err := os.ReadFile(path) // of clio alone, whole
	if err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	f.tenant(t, "clevio")
	f.purpose(t, "clevio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	f.stopConsent() // the snapshot now covers both tenants' every change

	// clevio's one change, its purpose, made undecodable.
	db, err := bolt.Open(filepath.Join(f.host.DataDir, "consent.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("consent.changes"))
		k, _ := b.Cursor().Seek(store.Key("clevio"))
		if k == nil || !bytes.HasPrefix(k, store.Key("clevio")) {
			return fmt.Errorf("clevio has no change")
		}
		return b.Put(bytes.Clone(k), []byte{0xff, 0xff, 0xff})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	before := f.decisions(t, []string{"clio"}, []string{"ada", "bob"})

	f.clock.Advance(consent.DefaultChangesKeptFor + time.Hour)
	n, err := f.svc.TrimChanges(f.ctx)
	if n != int(clioRevision) || err == nil || !strings.Contains(err.Error(), `tenant "clevio"`) {
		t.Fatalf("TrimChanges = %d, %v; want clio's %d changes trimmed and clevio's log named", n, err, clioRevision)
	}

	// A start from a snapshot without clevio replays clevio's log, which
	// it cannot read: it reads every record.
	f.stopConsent()
	if err := os.WriteFile(path, older, 0o600); err != nil {
		t.Fatal(err)
	}
	f.restart(t)
	if !regexp.MustCompile(`cannot replay the changes after the index snapshot.*tenant \\"clevio\\": storage: decode change`).MatchString(logs.String()) {
		t.Fatalf("the start did not fall back to reading every record:\n%s", logs)
	}
	sameLines(t, "after a start past a poison change", f.decisions(t, []string{"clio"}, []string{"ada", "bob"}), before)
	if _, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clevio", SubjectId: "ada", PurposeId: "newsletter"}); err != nil {
		t.Fatalf("clevio after the start: %v", err)
	}
}
