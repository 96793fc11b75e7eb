// Package storage keeps the consent service's state in its bbolt file:
// purposes, the append-only history of consent records, objections,
// restrictions, the per-tenant log of changes that Watch replays, the
// index of expiring consents, and each tenant's evidence key. Values are
// binary protobuf of the API's messages where the API has one, JSON for
// the service's own records. Functions that need the caller's transaction
// say so with a Tx suffix.
package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// The consent service's buckets. Keys join ids (tokens without NUL bytes)
// with NUL.
var (
	// BucketPurposes maps tenant, purpose id → Purpose.
	BucketPurposes = store.Bucket("consent.purposes")
	// BucketRecords maps tenant, subject, sequence → ConsentRecord: the
	// append-only proof of consent (Art. 7(1)), in the order recorded.
	BucketRecords = store.Bucket("consent.records")
	// BucketObjections maps tenant, subject, objection id → Objection.
	BucketObjections = store.Bucket("consent.objections")
	// BucketRestrictions maps tenant, restriction id → Restriction.
	BucketRestrictions = store.Bucket("consent.restrictions")
	// BucketChanges maps tenant, revision → Change: what Watch replays,
	// for as long as the service keeps changes (TrimChangesTx).
	BucketChanges = store.Bucket("consent.changes")
	// BucketTrimmed maps tenant → the last revision whose change was
	// trimmed from BucketChanges.
	BucketTrimmed = store.Bucket("consent.trimmed")
	// BucketRevisions maps tenant → its last revision.
	BucketRevisions = store.Bucket("consent.revisions")
	// BucketExpiries maps expiry time, tenant, subject, purpose, record id →
	// nothing: the grants to expire, in time order.
	BucketExpiries = store.Bucket("consent.expiries")
	// BucketEvidenceKeys maps tenant → EvidenceKey.
	BucketEvidenceKeys = store.Bucket("consent.evidence_keys")
	// BucketTenantCountries maps tenant → its country as the registry's
	// TenantSettings.country says (empty when it has none), so that Check
	// knows it while the registry is down.
	BucketTenantCountries = store.Bucket("consent.tenant_countries")
	// BucketWebSettings maps tenant → WebSettings: the configuration of
	// the tenant's public consent endpoint.
	BucketWebSettings = store.Bucket("consent.web_settings")
	// BucketRecovery keeps what catch-up after a restore needs: when the
	// service last knew its file complete (keyAliveAt) and, while limits
	// may be lost beyond the stream's reach, the gap (keyGap); and the
	// replication epoch the file's history belongs to (keyEpoch); per
	// tenant, the revisions restores undid (keyUndone).
	BucketRecovery = store.Bucket("consent.recovery")
)

// Keys in BucketRecovery.
var (
	keyAliveAt = []byte("alive_at")
	keyGap     = []byte("gap")
	keyEpoch   = []byte("epoch")
)

// keyUndone is a tenant's key of its undone revisions in BucketRecovery.
func keyUndone(tenant string) []byte { return append([]byte("undone\x00"), tenant...) }

// Undone is a span of a tenant's revisions that a restore undid: the
// changes after After up to Through were published, then lost with the
// store it was restored over. The epoch the restore started skips past
// Through (SkipRevisionsTx), so no later change has those revisions.
type Undone struct {
	After   uint64 `json:"after"`
	Through uint64 `json:"through"`
}

// AddUndoneTx records that a restore undid a span of a tenant's revisions.
func AddUndoneTx(tx *bolt.Tx, tenant string, u Undone) error {
	spans, err := UndoneTx(tx, tenant)
	if err != nil {
		return err
	}
	return putJSON(store.BucketTx(tx, BucketRecovery), keyUndone(tenant), append(spans, u))
}

// UndoneTx returns the spans of a tenant's revisions that restores undid,
// oldest first.
func UndoneTx(tx *bolt.Tx, tenant string) ([]Undone, error) {
	v := store.BucketTx(tx, BucketRecovery).Get(keyUndone(tenant))
	if v == nil {
		return nil, nil
	}
	var spans []Undone
	return spans, json.Unmarshal(v, &spans)
}

// Schema is the layout of consent.db.
var Schema = store.Schema{
	Service: "consent",
	Version: 4,
	Buckets: []store.Bucket{BucketPurposes, BucketRecords, BucketObjections, BucketRestrictions,
		BucketChanges, BucketTrimmed, BucketRevisions, BucketExpiries, BucketEvidenceKeys, BucketTenantCountries, BucketRecovery, BucketWebSettings},
	// Only the API's audited mutations create purposes and consent
	// records: a file holding either has audit entries.
	Audited: []store.Bucket{BucketPurposes, BucketRecords, BucketWebSettings},
	// Version 2 moved the tasks to the kit's key encoding (see
	// tasks.MigrateKeysTx); open tasks stay open across it. Version 3
	// writes them in binary (tasks.BinaryTasksTx). Version 4 may trim the
	// change log (TrimChangesTx): it changes nothing in the file, but a
	// build before it would replay and serve a trimmed log as if whole.
	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}, {To: 3, Up: tasks.BinaryTasksTx}, {To: 4, Up: noMigration}},
	// The file holds every subject's history and its open stands between
	// a restart and the first Check: rebuilding the free list by walking
	// every page took 20-40 s for a million subjects (3.9 GB) and would
	// take minutes for ten, where the kept list opens in milliseconds.
	PersistFreelist: true,
}

// PurposeTx returns a tenant's purpose.
func PurposeTx(tx *bolt.Tx, tenant, id string) (*consentv1.Purpose, bool, error) {
	v := store.BucketTx(tx, BucketPurposes).Get(store.Key(tenant, id))
	if v == nil {
		return nil, false, nil
	}
	p := &consentv1.Purpose{}
	return p, true, proto.Unmarshal(v, p)
}

// PutPurposeTx stores a purpose.
func PutPurposeTx(tx *bolt.Tx, tenant string, p *consentv1.Purpose) error {
	return putProto(store.BucketTx(tx, BucketPurposes), store.Key(tenant, p.PurposeId), p)
}

// WebSettingsTx returns a tenant's web settings.
func WebSettingsTx(tx *bolt.Tx, tenant string) (*consentv1.WebSettings, bool, error) {
	v := store.BucketTx(tx, BucketWebSettings).Get(store.Key(tenant))
	if v == nil {
		return nil, false, nil
	}
	w := &consentv1.WebSettings{}
	return w, true, proto.Unmarshal(v, w)
}

// PutWebSettingsTx stores a tenant's web settings.
func PutWebSettingsTx(tx *bolt.Tx, tenant string, w *consentv1.WebSettings) error {
	return putProto(store.BucketTx(tx, BucketWebSettings), store.Key(tenant), w)
}

// LatestRecordsTx returns a subject's latest consent record of each
// purpose, by purpose id.
func LatestRecordsTx(tx *bolt.Tx, tenant, subject string) (map[string]*consentv1.ConsentRecord, error) {
	latest := map[string]*consentv1.ConsentRecord{}
	err := Each(tx, BucketRecords, store.Key(tenant, subject), func(_, v []byte) error {
		r := &consentv1.ConsentRecord{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		latest[r.PurposeId] = r
		return nil
	})
	return latest, err
}

// AddRecordTx appends a consent record to its subject's history.
func AddRecordTx(tx *bolt.Tx, r *consentv1.ConsentRecord) error {
	b := store.BucketTx(tx, BucketRecords)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return putProto(b, append(store.Key(r.TenantId, r.SubjectId), store.Uint64Key(seq)...), r)
}

// Recovered is the provenance of state recovered from the platform stream
// after a restore: the event that proves the lost change, its position in
// the stream, and when it was recovered.
type Recovered struct {
	EventID        string    `json:"event_id"`
	StreamSequence uint64    `json:"stream_sequence"`
	At             time.Time `json:"at"`
}

// Proto returns r as the API shows it; nil for nil.
func (r *Recovered) Proto() *consentv1.RecoveredFrom {
	if r == nil {
		return nil
	}
	return &consentv1.RecoveredFrom{EventId: r.EventID, StreamSequence: r.StreamSequence, RecoveredAt: timestamppb.New(r.At)}
}

// SubjectRecordTx looks through a subject's consent records for the one
// with id recordID, or one recovered from the event eventID, and returns
// it.
func SubjectRecordTx(tx *bolt.Tx, tenant, subject, recordID, eventID string) (*consentv1.ConsentRecord, bool, error) {
	var found *consentv1.ConsentRecord
	err := Each(tx, BucketRecords, store.Key(tenant, subject), func(_, v []byte) error {
		if found != nil {
			return nil
		}
		r := &consentv1.ConsentRecord{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		if (recordID != "" && r.RecordId == recordID) || (eventID != "" && r.GetRecoveredFrom().GetEventId() == eventID) {
			found = r
		}
		return nil
	})
	return found, found != nil, err
}

// ExpiryKey is the BucketExpiries key of a grant's expiry.
func ExpiryKey(r *consentv1.ConsentRecord) []byte {
	return append(store.TimeKey(r.ExpiresAt.AsTime()), store.Key(r.TenantId, r.SubjectId, r.PurposeId, r.RecordId)...)
}

// AliveAtTx returns when the service last recorded that its file held
// every limit it had published; false when it never did.
func AliveAtTx(tx *bolt.Tx) (time.Time, bool) {
	v := store.BucketTx(tx, BucketRecovery).Get(keyAliveAt)
	if len(v) != 8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(store.KeyUint64(v))).UTC(), true
}

// PutAliveAtTx records that at t the file held every limit the service
// had published.
func PutAliveAtTx(tx *bolt.Tx, t time.Time) error {
	return store.BucketTx(tx, BucketRecovery).Put(keyAliveAt, store.TimeKey(t))
}

// EpochTx returns the replication epoch the file's history belongs to; 0
// for a file that never started one (its history was never found behind
// what it had published).
func EpochTx(tx *bolt.Tx) uint64 {
	if v := store.BucketTx(tx, BucketRecovery).Get(keyEpoch); len(v) == 8 {
		return store.KeyUint64(v)
	}
	return 0
}

// PutEpochTx records the replication epoch the file's history belongs to
// from now on.
func PutEpochTx(tx *bolt.Tx, epoch uint64) error {
	return store.BucketTx(tx, BucketRecovery).Put(keyEpoch, store.Uint64Key(epoch))
}

// Gap is a span of time in which limits the service published may be
// lost: its file was restored from a backup older than the stream's
// reach, and the stream no longer holds every event published since.
type Gap struct {
	// From is when the file was last known complete; zero for a file that
	// never was (a new, empty file).
	From time.Time `json:"from,omitzero"`
	// Until is the time of the oldest event the stream still held, from
	// which on everything was recovered.
	Until time.Time `json:"until"`
	// FirstSequence is the stream's first sequence then.
	FirstSequence uint64 `json:"first_sequence"`
	// StreamMaxAge is how long the stream keeps events.
	StreamMaxAge time.Duration `json:"stream_max_age"`
	// DetectedAt is when the gap was found.
	DetectedAt time.Time `json:"detected_at"`
}

// GapTx returns the recorded gap, if any.
func GapTx(tx *bolt.Tx) (*Gap, error) {
	v := store.BucketTx(tx, BucketRecovery).Get(keyGap)
	if v == nil {
		return nil, nil
	}
	g := &Gap{}
	return g, json.Unmarshal(v, g)
}

// PutGapTx records a gap; nil removes it.
func PutGapTx(tx *bolt.Tx, g *Gap) error {
	b := store.BucketTx(tx, BucketRecovery)
	if g == nil {
		return b.Delete(keyGap)
	}
	return putJSON(b, keyGap, g)
}

// AcceptedGap is a gap an operator accepted the loss of.
type AcceptedGap struct {
	Gap        Gap       `json:"gap"`
	AcceptedAt time.Time `json:"accepted_at"`
	By         string    `json:"by"`
	Reason     string    `json:"reason"`
}

// AcceptGapTx removes the standing gap and keeps the acceptance, under
// its time, for as long as the file lives.
func AcceptGapTx(tx *bolt.Tx, a AcceptedGap) error {
	b := store.BucketTx(tx, BucketRecovery)
	if err := putJSON(b, append([]byte("accepted\x00"), store.TimeKey(a.AcceptedAt)...), a); err != nil {
		return err
	}
	return b.Delete(keyGap)
}

// Objection is a recorded objection (Art. 21).
type Objection struct {
	ID         string                  `json:"id"`
	Subject    string                  `json:"subject"`
	Scope      eventsv1.ObjectionScope `json:"scope"`
	Purposes   []string                `json:"purposes,omitempty"`
	CauseKind  commonv1.CauseKind      `json:"cause_kind"`
	CauseID    string                  `json:"cause_id"`
	RecordedAt time.Time               `json:"recorded_at"`
	// Recovered is set on an objection recovered from the stream.
	Recovered *Recovered `json:"recovered,omitempty"`
}

// ObjectionExistsTx reports whether the subject's objection is stored.
func ObjectionExistsTx(tx *bolt.Tx, tenant, subject, id string) bool {
	return store.BucketTx(tx, BucketObjections).Get(store.Key(tenant, subject, id)) != nil
}

// PutObjectionTx stores an objection.
func PutObjectionTx(tx *bolt.Tx, tenant string, o Objection) error {
	return putJSON(store.BucketTx(tx, BucketObjections), store.Key(tenant, o.Subject, o.ID), o)
}

// Restriction is a restriction of processing (Art. 18): its Art. 18(1)
// ground and, once lifted, the evidence of the lift.
type Restriction struct {
	ID        string                     `json:"id"`
	Subject   string                     `json:"subject"`
	Ground    eventsv1.RestrictionGround `json:"ground"`
	Purposes  []string                   `json:"purposes,omitempty"`
	CauseKind commonv1.CauseKind         `json:"cause_kind"`
	CauseID   string                     `json:"cause_id"`
	AppliedAt time.Time                  `json:"applied_at"`
	LiftedAt  time.Time                  `json:"lifted_at,omitzero"`
	// SubjectInformedAt is when the subject was informed before the lift
	// (Art. 18(3)).
	SubjectInformedAt time.Time `json:"subject_informed_at,omitzero"`
	// GroundOutcome is how the ground ended, for a lift by
	// ResolveRestrictionGround; unspecified for a lift by hand.
	GroundOutcome consentv1.RestrictionGroundOutcome `json:"ground_outcome,omitempty"`
	// ObjectionID is the objection recorded when the subject's objection
	// was upheld.
	ObjectionID string `json:"objection_id,omitempty"`
	// LiftCauseKind and LiftCauseID are what caused the lift.
	LiftCauseKind commonv1.CauseKind `json:"lift_cause_kind,omitempty"`
	LiftCauseID   string             `json:"lift_cause_id,omitempty"`
	// Recovered is set on a restriction recovered from the stream, and
	// LiftRecovered on a lift recovered from it.
	Recovered     *Recovered `json:"recovered,omitempty"`
	LiftRecovered *Recovered `json:"lift_recovered,omitempty"`
}

// Active reports whether the restriction was in force at t.
func (r Restriction) Active(t time.Time) bool {
	return !r.AppliedAt.After(t) && (r.LiftedAt.IsZero() || t.Before(r.LiftedAt))
}

// RestrictionTx returns a restriction.
func RestrictionTx(tx *bolt.Tx, tenant, id string) (Restriction, bool, error) {
	var r Restriction
	v := store.BucketTx(tx, BucketRestrictions).Get(store.Key(tenant, id))
	if v == nil {
		return r, false, nil
	}
	return r, true, json.Unmarshal(v, &r)
}

// PutRestrictionTx stores a restriction.
func PutRestrictionTx(tx *bolt.Tx, tenant string, r Restriction) error {
	return putJSON(store.BucketTx(tx, BucketRestrictions), store.Key(tenant, r.ID), r)
}

// AddChangeTx appends a change to the tenant's log with the next revision,
// which it sets on c and returns.
func AddChangeTx(tx *bolt.Tx, tenant string, c *consentv1.Change) (uint64, error) {
	revs := store.BucketTx(tx, BucketRevisions)
	var rev uint64
	if v := revs.Get([]byte(tenant)); len(v) == 8 {
		rev = store.KeyUint64(v)
	}
	rev++
	if err := revs.Put([]byte(tenant), store.Uint64Key(rev)); err != nil {
		return 0, err
	}
	c.Revision = rev
	return rev, putProto(store.BucketTx(tx, BucketChanges), append(store.Key(tenant), store.Uint64Key(rev)...), c)
}

// RevisionsTx returns every tenant's last revision.
func RevisionsTx(tx *bolt.Tx) (map[string]uint64, error) {
	revs := map[string]uint64{}
	return revs, Each(tx, BucketRevisions, nil, func(k, v []byte) error {
		revs[string(k)] = store.KeyUint64(v)
		return nil
	})
}

// SkipRevisionsTx moves a tenant's revision on to rev without a change:
// the revisions between are never used. A writer starting a replication
// epoch skips past every revision its shard published, so that no
// revision names two states.
func SkipRevisionsTx(tx *bolt.Tx, tenant string, rev uint64) error {
	return store.BucketTx(tx, BucketRevisions).Put([]byte(tenant), store.Uint64Key(rev))
}

// noMigration changes nothing in the file: a version that only marks what
// code from before must not open.
func noMigration(*bolt.Tx) error { return nil }

// TrimmedTx returns the last revision trimmed from a tenant's change log:
// the changes up to it are gone, 0 when none is.
func TrimmedTx(tx *bolt.Tx, tenant string) uint64 {
	if v := store.BucketTx(tx, BucketTrimmed).Get([]byte(tenant)); len(v) == 8 {
		return store.KeyUint64(v)
	}
	return 0
}

// TrimChangesTx deletes up to limit of a tenant's oldest changes: those
// up to revision through that happened before before, stopping at the
// first that did not. It records the last revision it deleted
// (TrimmedTx) and returns how many it deleted.
func TrimChangesTx(tx *bolt.Tx, tenant string, through uint64, before time.Time, limit int) (int, error) {
	doomed, last, err := trimmableTx(tx, tenant, through, before, limit)
	if err != nil || len(doomed) == 0 {
		return 0, err
	}
	// Deleted after the walk: a bbolt cursor may skip the key after one
	// it deleted.
	b := store.BucketTx(tx, BucketChanges)
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(doomed), store.BucketTx(tx, BucketTrimmed).Put([]byte(tenant), store.Uint64Key(last))
}

// CanTrimTx says whether TrimChangesTx would delete any of a tenant's
// changes, in a read-only transaction.
func CanTrimTx(tx *bolt.Tx, tenant string, through uint64, before time.Time) (bool, error) {
	doomed, _, err := trimmableTx(tx, tenant, through, before, 1)
	return len(doomed) > 0, err
}

// trimmableTx returns the keys of up to limit of the changes
// TrimChangesTx deletes, and the last one's revision.
func trimmableTx(tx *bolt.Tx, tenant string, through uint64, before time.Time, limit int) ([][]byte, uint64, error) {
	prefix := store.Key(tenant)
	c := store.BucketTx(tx, BucketChanges).Cursor()
	var keys [][]byte
	var last uint64
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < limit; k, v = c.Next() {
		rev := store.KeyUint64(k[len(prefix):])
		if rev > through {
			break
		}
		ch := &consentv1.Change{}
		if err := proto.Unmarshal(v, ch); err != nil {
			return nil, 0, fmt.Errorf("storage: decode change %q: %w", k, err)
		}
		if !ch.At.AsTime().Before(before) {
			break
		}
		keys, last = append(keys, bytes.Clone(k)), rev
	}
	return keys, last, nil
}

// ChangesTx returns up to limit changes of a tenant after revision after.
func ChangesTx(tx *bolt.Tx, tenant string, after uint64, limit int) ([]*consentv1.Change, error) {
	prefix := store.Key(tenant)
	c := store.BucketTx(tx, BucketChanges).Cursor()
	var out []*consentv1.Change
	for k, v := c.Seek(append(prefix, store.Uint64Key(after+1)...)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
		ch := &consentv1.Change{}
		if err := proto.Unmarshal(v, ch); err != nil {
			return nil, fmt.Errorf("storage: decode change %q: %w", k, err)
		}
		out = append(out, ch)
	}
	return out, nil
}

// ScheduleExpiryTx indexes a grant's expiry.
func ScheduleExpiryTx(tx *bolt.Tx, r *consentv1.ConsentRecord) error {
	return store.BucketTx(tx, BucketExpiries).Put(ExpiryKey(r), nil)
}

// Expiry is a grant due to expire.
type Expiry struct {
	Key                                []byte
	At                                 time.Time
	Tenant, Subject, Purpose, RecordID string
}

// DueExpiriesTx returns up to limit grants that expire at or before now.
func DueExpiriesTx(tx *bolt.Tx, now time.Time, limit int) ([]Expiry, error) {
	var out []Expiry
	c := store.BucketTx(tx, BucketExpiries).Cursor()
	for k, _ := c.First(); k != nil && len(out) < limit; k, _ = c.Next() {
		if bytes.Compare(k[:8], store.TimeKey(now)) > 0 {
			break
		}
		parts := bytes.Split(k[8:], []byte{0})
		if len(parts) != 5 {
			return nil, fmt.Errorf("storage: corrupt expiry key %q", k)
		}
		out = append(out, Expiry{Key: append([]byte(nil), k...), At: time.Unix(0, int64(store.KeyUint64(k[:8]))).UTC(),
			Tenant: string(parts[0]), Subject: string(parts[1]), Purpose: string(parts[2]), RecordID: string(parts[3])})
	}
	return out, nil
}

// EvidenceKey is a tenant's key for hashing consent evidence. Destroying
// it makes every fingerprint made with it unlinkable to an address.
type EvidenceKey struct {
	ID  string `json:"id"`
	Key []byte `json:"key"`
}

// EvidenceKeyTx returns the tenant's evidence key.
func EvidenceKeyTx(tx *bolt.Tx, tenant string) (EvidenceKey, bool, error) {
	var k EvidenceKey
	v := store.BucketTx(tx, BucketEvidenceKeys).Get([]byte(tenant))
	if v == nil {
		return k, false, nil
	}
	return k, true, json.Unmarshal(v, &k)
}

// PutEvidenceKeyTx stores the tenant's evidence key.
func PutEvidenceKeyTx(tx *bolt.Tx, tenant string, k EvidenceKey) error {
	return putJSON(store.BucketTx(tx, BucketEvidenceKeys), []byte(tenant), k)
}

// Each calls fn for every value under prefix in bucket b.
func Each(tx *bolt.Tx, b store.Bucket, prefix []byte, fn func(k, v []byte) error) error {
	c := store.BucketTx(tx, b).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

func putProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// PutTenantCountryTx stores a tenant's country; empty when it has none.
func PutTenantCountryTx(tx *bolt.Tx, tenant, country string) error {
	return store.BucketTx(tx, BucketTenantCountries).Put([]byte(tenant), []byte(country))
}

// DeleteEvidenceKeyTx destroys the tenant's evidence key.
func DeleteEvidenceKeyTx(tx *bolt.Tx, tenant string) error {
	return store.BucketTx(tx, BucketEvidenceKeys).Delete([]byte(tenant))
}
