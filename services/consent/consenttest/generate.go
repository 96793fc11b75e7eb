// Package consenttest fills a consent store with a generated data set:
// millions of subjects, written straight into consent.db in the service's
// own formats (internal/storage) far faster than the API records them, for
// benchmarks of the service's memory and start. Tests of behaviour go
// through the API instead.
package consenttest

import (
	"fmt"
	"math/rand/v2"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// Spec is the data set.
type Spec struct {
	// Tenant is the one tenant the subjects belong to; Country its
	// country.
	Tenant, Country string
	// Subjects is how many; each gets one record for each of Purposes,
	// and one in ten a second, earlier one for the first purpose.
	Subjects int
	// Now is when the data set is generated: records are spread over the
	// two years before it.
	Now time.Time
	// Seed makes the data set reproducible.
	Seed uint64
}

// Purposes are the data set's five purposes, as a retailer declares them:
// four consent-based with lifetimes, one by legitimate interests.
var Purposes = []*consentv1.Purpose{
	{PurposeId: "marketing.email", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DirectMarketing: true,
		DefaultLifetime: durationpb.New(730 * 24 * time.Hour)},
	{PurposeId: "marketing.sms", Name: "Text messages", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DirectMarketing: true,
		DefaultLifetime: durationpb.New(365 * 24 * time.Hour)},
	{PurposeId: "cookies.statistics", Name: "Statistics cookies", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, GpcOptOut: true,
		DefaultLifetime: durationpb.New(365 * 24 * time.Hour)},
	{PurposeId: "personalisation", Name: "Recommendations", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT,
		DefaultLifetime: durationpb.New(730 * 24 * time.Hour)},
	{PurposeId: "product.analytics", Name: "Product analytics", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS},
}

// Result counts what Generate wrote.
type Result struct {
	Records, Objections, Restrictions int
	// Revision is the tenant's last change revision.
	Revision uint64
}

// SubjectID is the id of the i-th generated subject. Ids grow with i, so
// that the records, stored by tenant and subject, are appended in key
// order.
func SubjectID(i int) string { return fmt.Sprintf("sub_%016x", uint64(i)*1_000_003) }

// subjectsPerTx bounds the subjects one write transaction holds.
const subjectsPerTx = 20_000

// Generate writes the data set into the consent store at path, creating
// it. The mix per record: 70 in 100 grants (those given more than their
// lifetime ago expired by Now), 15 denials, 10 withdrawals, 5 renewals;
// one subject in 200 has objected to direct marketing and one in 1,000 has
// its processing restricted. Record ids are UUIDv7 of the recorded time,
// as the service makes them; evidence is left out. It writes no audit
// entries: a file generated this way is for measuring, not for audit.
func Generate(path string, spec Spec) (Result, error) {
	db, err := store.Open(store.Options{Path: path, Schema: storage.Schema})
	if err != nil {
		return Result{}, err
	}
	defer db.Close()
	g := &generator{spec: spec, rng: rand.New(rand.NewPCG(spec.Seed, uint64(spec.Subjects)))}
	if err := db.Update(g.tenantTx); err != nil {
		return Result{}, err
	}
	for from := 0; from < spec.Subjects; from += subjectsPerTx {
		if err := db.Update(func(tx *bolt.Tx) error {
			for i := from; i < min(from+subjectsPerTx, spec.Subjects); i++ {
				if err := g.subjectTx(tx, SubjectID(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return Result{}, err
		}
	}
	return g.result, nil
}

type generator struct {
	spec   Spec
	rng    *rand.Rand
	result Result
}

// tenantTx writes the tenant's purposes and country.
func (g *generator) tenantTx(tx *bolt.Tx) error {
	for _, p := range Purposes {
		if err := storage.PutPurposeTx(tx, g.spec.Tenant, p); err != nil {
			return err
		}
		if err := g.changeTx(tx, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_PURPOSE_CHANGED, PurposeIds: []string{p.PurposeId}},
			g.spec.Now.Add(-800*24*time.Hour)); err != nil {
			return err
		}
	}
	return storage.PutTenantCountryTx(tx, g.spec.Tenant, g.spec.Country)
}

func (g *generator) changeTx(tx *bolt.Tx, c *consentv1.Change, at time.Time) error {
	c.At = timestamppb.New(at)
	rev, err := storage.AddChangeTx(tx, g.spec.Tenant, c)
	g.result.Revision = rev
	return err
}

// subjectTx writes one subject's records, and its objection and
// restriction when it has them, each with its change.
func (g *generator) subjectTx(tx *bolt.Tx, subject string) error {
	for i, p := range Purposes {
		n := 1
		if i == 0 && g.rng.IntN(10) == 0 {
			n = 2
		}
		when := g.spec.Now.Add(-time.Duration(g.rng.Int64N(int64(730 * 24 * time.Hour))))
		for range n {
			if err := g.recordTx(tx, subject, p, when); err != nil {
				return err
			}
			when = when.Add(time.Duration(g.rng.Int64N(int64(30 * 24 * time.Hour))))
		}
	}
	return g.limitsTx(tx, subject)
}

// recordTx writes one record recorded at when, its change and, for a
// grant not yet expired, its expiry.
func (g *generator) recordTx(tx *bolt.Tx, subject string, p *consentv1.Purpose, when time.Time) error {
	r := &consentv1.ConsentRecord{RecordId: uuidV7(g.rng, when), TenantId: g.spec.Tenant, SubjectId: subject, PurposeId: p.PurposeId,
		NoticeVersion: "2024-01", Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM, RecordedAt: timestamppb.New(when),
		GivenAt: timestamppb.New(when), Actor: "banner"}
	switch k := g.rng.IntN(100); {
	case k < 70:
		r.Action = consentv1.ConsentAction_CONSENT_ACTION_GRANT
	case k < 85:
		r.Action = consentv1.ConsentAction_CONSENT_ACTION_DENY
	case k < 95:
		r.Action = consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW
	default:
		r.Action = consentv1.ConsentAction_CONSENT_ACTION_RENEW
	}
	grant := r.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT || r.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW
	if grant && p.DefaultLifetime != nil {
		expires := when.Add(p.DefaultLifetime.AsDuration())
		r.ExpiresAt = timestamppb.New(expires)
		if expires.After(g.spec.Now) {
			if err := storage.ScheduleExpiryTx(tx, r); err != nil {
				return err
			}
		}
	}
	if err := storage.AddRecordTx(tx, r); err != nil {
		return err
	}
	g.result.Records++
	return g.changeTx(tx, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_RECORDED, SubjectId: subject,
		PurposeIds: []string{p.PurposeId}, BasisId: r.RecordId}, when)
}

// limitsTx gives one subject in 200 an objection to direct marketing and
// one in 1,000 a restriction, each with its change.
func (g *generator) limitsTx(tx *bolt.Tx, subject string) error {
	rng, now := g.rng, g.spec.Now
	if rng.IntN(200) == 0 {
		at := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		o := storage.Objection{ID: uuidV7(rng, at), Subject: subject, Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING,
			CauseKind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, RecordedAt: at}
		if err := storage.PutObjectionTx(tx, g.spec.Tenant, o); err != nil {
			return err
		}
		if err := g.changeTx(tx, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_OBJECTION_RECORDED, SubjectId: subject, BasisId: o.ID}, at); err != nil {
			return err
		}
		g.result.Objections++
	}
	if rng.IntN(1000) == 0 {
		at := now.Add(-time.Duration(rng.Int64N(int64(30 * 24 * time.Hour))))
		r := storage.Restriction{ID: uuidV7(rng, at), Subject: subject, Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED, AppliedAt: at}
		if err := storage.PutRestrictionTx(tx, g.spec.Tenant, r); err != nil {
			return err
		}
		if err := g.changeTx(tx, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_APPLIED, SubjectId: subject, BasisId: r.ID}, at); err != nil {
			return err
		}
		g.result.Restrictions++
	}
	return nil
}

// uuidV7 returns a UUIDv7 of time t, laid out as outbox.NewEventID lays
// them out, from rng rather than crypto/rand.
func uuidV7(rng *rand.Rand, t time.Time) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	ms := uint64(t.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
