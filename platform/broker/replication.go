package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The consent replication stream and snapshot bucket.
//
// A consent writer publishes every committed change of its decision state
// (services/consent, replication.go) on its own stream, apart from the
// platform stream: the entries are state for read replicas to follow, not
// events for systems, and a replica reads only its writer's shard. Its
// NATS subjects sit outside SubjectPrefix, since JetStream refuses two
// streams whose subjects overlap and the platform stream captures
// "lethe.>".
const (
	// ConsentStateStreamName names the replication stream.
	ConsentStateStreamName = "LETHE_CONSENT_STATE"
	// ConsentStatePrefix starts every NATS subject of the replication
	// stream: lethe-replication.consent.<shard>.<tenant>.
	ConsentStatePrefix = "lethe-replication.consent"
	// ConsentSnapshotBucket names the object store bucket of the writers'
	// snapshots.
	ConsentSnapshotBucket = "lethe-consent-snapshots"
	// DefaultConsentStateMaxAge is how long the replication stream keeps an
	// entry by default. A replica needs the entries after the latest
	// snapshot only, taken every few minutes; a day leaves a replica that
	// restarts from its own local copy of an older snapshot room to resume
	// without downloading a new one, and bounds how long the entries'
	// pseudonymous subject ids stay on the stream.
	DefaultConsentStateMaxAge = 24 * time.Hour
)

// ConsentStateSubject is the NATS subject of a tenant's replication entries
// on a writer's shard.
func ConsentStateSubject(shard, tenant string) string {
	return ConsentStatePrefix + "." + shard + "." + tenant
}

// ConsentStateFilter is the NATS subject filter of every entry of a shard,
// which a replica of that shard follows.
func ConsentStateFilter(shard string) string { return ConsentStatePrefix + "." + shard + ".>" }

// EnsureConsentReplication provisions the consent replication stream and
// snapshot bucket, with the platform stream's replicas (R3 on a production
// cluster, R1 in dev) and file storage. The consent writer calls it at
// start, with the platform stream's configuration: the other services have
// no business with it (nor the NATS permissions).
func EnsureConsentReplication(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	replicas := max(cfg.Replicas, 1)
	maxAge := cfg.ConsentStateMaxAge
	if maxAge <= 0 {
		maxAge = DefaultConsentStateMaxAge
	}
	_, err := createOrUpdate(ctx, js, jetstream.StreamConfig{
		Name:        ConsentStateStreamName,
		Description: "Consent writers' committed decision state, followed by consent read replicas",
		Subjects:    []string{ConsentStatePrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      maxAge,
		// The outbox relay re-publishes an unacknowledged entry with the
		// same Nats-Msg-Id, as on the platform stream.
		Duplicates:        min(cfg.Duplicates, maxAge),
		Replicas:          replicas,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: -1,
	})
	if err != nil {
		return fmt.Errorf("broker: ensure stream %q: %w", ConsentStateStreamName, err)
	}
	for {
		attempt, cancel := context.WithTimeout(ctx, ensureAttempt)
		_, err = js.ObjectStore(attempt, ConsentSnapshotBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			_, err = js.CreateObjectStore(attempt, jetstream.ObjectStoreConfig{
				Bucket:      ConsentSnapshotBucket,
				Description: "Consent writers' snapshots of their decision state, restored by read replicas",
				Storage:     jetstream.FileStorage,
				Replicas:    replicas,
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				err = nil // another service created it meanwhile
			}
		}
		cancel()
		if err == nil || ctx.Err() != nil || !unsettled(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("broker: ensure object store %q: %w", ConsentSnapshotBucket, err)
	}
	return nil
}
