package retention

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"
)

// schema is the layout of retention.db.
var schema = store.Schema{
	Service: "retention",
	Version: 3,
	Buckets: append([]store.Bucket{bucketRules, bucketHolds, bucketPolicyGen, bucketRescan, bucketReport, bucketParked}, schedule.Buckets...),
	// Only the API's audited mutations write rules and holds. Subjects'
	// schedules are not listed: they are applied from the journal, whose
	// calls are audited in retention-journal.db's chain, not this one's.
	Audited: []store.Bucket{bucketRules, bucketHolds},
	// Version 2 moved the tasks to the kit's key encoding (see
	// tasks.MigrateKeysTx); open tasks stay open across it. Version 3
	// writes them in binary (tasks.BinaryTasksTx).
	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}, {To: 3, Up: tasks.BinaryTasksTx}},
}

// A tenant's policy is its rules and holds. They are few and read by every
// signal, so they are cached in memory, decoded, per tenant generation: each
// change of a rule or hold bumps the tenant's generation in the change's own
// transaction, and a reader whose transaction sees another generation than
// the cached one reloads. A reader therefore always evaluates with exactly
// the policy its transaction sees, whatever order commits land in.
var (
	// bucketRules maps (tenant, rule id) → Rule.
	bucketRules = store.Bucket("retention.rules")
	// bucketHolds maps (tenant, hold id) → Hold.
	bucketHolds = store.Bucket("retention.holds")
	// bucketPolicyGen maps tenant → generation of its rules and holds.
	bucketPolicyGen = store.Bucket("retention.policy_generations")
)

// bucketReport maps (tenant, rule id) → ruleCounts: what each rule did,
// counted in the transactions that did it.
var bucketReport = store.Bucket("retention.report")

// bucketRescan maps tenant → the last subject key re-evaluated (empty: from
// the first): tenants whose rules or holds changed, whose subjects must be
// rescheduled under them.
var bucketRescan = store.Bucket("retention.rescan")

// bucketParked maps tenant NUL subject NUL kind NUL id NUL → parkedItem
// (JSON): items the service set aside. kind is "signal", id its journal
// sequence number in 20 decimal digits; or "subject", id empty. An entry
// whose tenant or subject cannot be read is parked under empty ones.
var bucketParked = store.Bucket("retention.parked")

// journalSchema is the layout of retention-journal.db.
//
// It declares no audited bucket (store.Schema.Audited): journaled signals
// are deleted once applied, within a second, and those drained from an
// older retention.db carry their audit entries in that file's chain. Its
// own chain is held to its head copy and its anchors like every other.
var journalSchema = store.Schema{
	Service: "retention-journal",
	Version: 1,
	Buckets: []store.Bucket{bucketJournal},
}

// bucketJournal maps a sequence number → tenant NUL signal: signals
// recorded and not yet applied.
var bucketJournal = store.Bucket("retention.signal_journal")

func putProtoTx(tx *bolt.Tx, bucket store.Bucket, k []byte, m proto.Message) error {
	v, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	return store.BucketTx(tx, bucket).Put(k, v)
}

// eachTx calls fn with every value of bucket under the tenant, by key.
func eachTx(tx *bolt.Tx, bucket store.Bucket, tenant string, fn func(v []byte) error) error {
	prefix := store.Key(tenant)
	c := store.BucketTx(tx, bucket).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}
