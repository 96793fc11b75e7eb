package store

// Bucket names a top-level bbolt bucket. Bucket names are package-level
// variables created once; callers never modify their bytes.
type Bucket []byte

// The kit's buckets. Their names start with an underscore, a prefix reserved
// for the kit so that a service's own bucket can never collide with one of
// them; Open creates all of them in every database.
var (
	// BucketMeta holds the schema version and the name of the service that
	// owns the file.
	BucketMeta = Bucket("_meta")

	// BucketIdempotency maps an idempotency key to the first result of the
	// request that carried it.
	BucketIdempotency = Bucket("_idempotency")

	// BucketIdempotencyExpiry indexes idempotency records by expiry time so
	// that sweeping costs in proportion to the expired records only.
	BucketIdempotencyExpiry = Bucket("_idempotency_expiry")

	// BucketAudit holds the service's tamper-evident audit chain.
	BucketAudit = Bucket("_audit")

	// BucketOutbox holds events committed with a state change and not yet
	// published.
	BucketOutbox = Bucket("_outbox")

	// BucketSubjectSequence holds the last event sequence number the
	// service assigned per (tenant, data subject), so that subscribers can
	// order one subject's events.
	BucketSubjectSequence = Bucket("_subject_sequence")

	// BucketTasks holds one task per (event, system): a system's share of
	// an event it must answer, and its outcome once final.
	BucketTasks = Bucket("_tasks")

	// BucketTaskEvents holds the events that tasks answer, so that an
	// unanswered one can be re-sent unchanged.
	BucketTaskEvents = Bucket("_task_events")

	// BucketTasksByCause indexes tasks by (tenant, cause), to tell when
	// every task of a cause is final.
	BucketTasksByCause = Bucket("_tasks_by_cause")

	// BucketTasksBySystem indexes open tasks by (tenant, system), to close
	// them when the system is removed.
	BucketTasksBySystem = Bucket("_tasks_by_system")

	// BucketTasksDue indexes open tasks by the time they are re-sent if
	// still unanswered, so a sweep costs in proportion to the due tasks.
	BucketTasksDue = Bucket("_tasks_due")

	// BucketTenantDirectory holds the tenants a service serves, as the
	// registry's events announced them.
	BucketTenantDirectory = Bucket("_tenant_directory")
)

// kitBuckets lists the buckets that Open creates in every database.
var kitBuckets = []Bucket{
	BucketMeta,
	BucketIdempotency,
	BucketIdempotencyExpiry,
	BucketAudit,
	BucketOutbox,
	BucketSubjectSequence,
	BucketTasks,
	BucketTaskEvents,
	BucketTasksByCause,
	BucketTasksBySystem,
	BucketTasksDue,
	BucketTenantDirectory,
}

// reservedPrefix starts every kit bucket name and no service bucket name.
const reservedPrefix = '_'
