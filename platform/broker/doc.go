// Package broker connects Lethe's services to NATS JetStream: it runs the
// embedded nats-server used by the all-in-one binary and by tests, opens
// client connections that survive a broker that is down or restarting, and
// provisions the single JetStream stream on which every Lethe event travels.
//
// The durability choices live here because they are easy to get wrong:
//
//   - A JetStream publish acknowledgement is not an fsync. The embedded
//     server syncs every write by default (see [EmbeddedConfig.SyncAlways]).
//   - De-duplication by Nats-Msg-Id lasts only for the stream's duplicate
//     window (see [StreamConfig.Duplicates]); subscribers de-duplicate by
//     event id for as long as the stream keeps events
//     (see [StreamConfig.MaxAge]).
//
// The NATS subject layout (lethe.<tenant>.<domain>.<event>) is defined
// elsewhere; this package knows only the prefix that the stream captures.
package broker

// SubjectPrefix is the first token of every NATS subject Lethe publishes
// on. The default stream captures SubjectPrefix + ".>", so a NATS subject
// outside this prefix is not persisted and its publish gets no acknowledgement.
const SubjectPrefix = "lethe"
