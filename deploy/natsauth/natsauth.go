// Package natsauth states in Go the NATS permissions that Lethe's shipped
// server configuration (deploy/nats/auth.conf) grants, so that tests can
// check every user of that file against them and operators can see the
// rules in one place.
//
// Users are named after what they are: "consent", "dsar", "registry" and
// "retention" for the services; "<system>@<tenant>" (contract.ConsumerName),
// which prefixes the names of the system's durable consumers, for a
// subscribing system. Each user's password is the environment variable
// PasswordVariable(user) of the nats-server process.
package natsauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/lethe-privacy/lethe/sdk/contract"
)

// AdminUser is the operators' user; it has every permission.
const AdminUser = "admin"

// ConnectUser is lethe-connect's user: it answers, on one connection, the
// WEBHOOK and CONNECTOR systems listed in its block (Connect).
const ConnectUser = "lethe-connect"

// Services are the Lethe services that have a NATS user each.
var Services = []string{"consent", "dsar", "registry", "retention"}

// deadLetters is the stream of MAX_DELIVERIES advisories
// (platform/broker.DeadLetterStreamName).
const deadLetters = contract.StreamName + "_DEAD_LETTERS"

// erasures is the erasure ledger (platform/broker.ErasureLedgerStreamName),
// which the server fills itself by sourcing LETHE: the services only
// provision it, and systems only replay it.
const erasures = contract.ErasureLedgerStream

// PasswordVariable is the environment variable that holds user's
// password: NATS_PASSWORD_NEWSLETTER_CLIO for "newsletter@clio".
func PasswordVariable(user string) string {
	return "NATS_PASSWORD_" + strings.ToUpper(strings.NewReplacer("@", "_", "-", "_").Replace(user))
}

// Service returns the permissions of a Lethe service's user. A service
// publishes events, provisions the LETHE stream, its dead-letter stream and
// its erasure ledger, reads any consumer's metadata (to map a dead letter to its
// system) and lists the platform stream's consumers (to report the
// systems' lag), reads stream messages, pulls from and acknowledges its
// own consumers, and receives the registry's tenant events. It may not publish an outcome: only the system an
// outcome names reports it.
//
// Consumers are not limited by name: NATS wildcards match whole tokens
// only, so "lethe-consent-*" cannot be expressed, and the services read
// the whole stream anyway.
func Service(name string) *server.Permissions {
	var pub []string
	pub = append(pub, contract.SubjectRoot+".*.*.*")
	for _, stream := range []string{contract.StreamName, deadLetters, erasures} {
		pub = append(pub,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.STREAM.CREATE."+stream,
			"$JS.API.STREAM.UPDATE."+stream,
		)
		if stream == contract.StreamName {
			pub = append(pub,
				"$JS.API.STREAM.MSG.GET."+stream,
				"$JS.API.DIRECT.GET."+stream,
				"$JS.API.DIRECT.GET."+stream+".>",
			)
		}
	}
	for _, stream := range []string{contract.StreamName, deadLetters} {
		pub = append(pub,
			"$JS.API.CONSUMER.CREATE."+stream+".*",
			"$JS.API.CONSUMER.CREATE."+stream+".*.>",
			"$JS.API.CONSUMER.INFO."+stream+".*",
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".*",
		)
		if stream == contract.StreamName {
			// The registry lists the systems' consumers to report
			// their lag (platform/broker.LagMonitor).
			pub = append(pub, "$JS.API.CONSUMER.LIST."+stream)
		}
	}
	for _, stream := range []string{contract.StreamName, deadLetters} {
		pub = append(pub, ackSubjects(stream, "*")...)
	}
	if name == "consent" {
		pub = append(pub, consentWriter()...)
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{
			Allow: pub,
			Deny:  []string{contract.SubjectRoot + ".*." + contract.OutcomeDomain + ".*"},
		},
		// Replies, and the registry's tenant events as they are published:
		// the consent service follows tenants' countries with a plain
		// subscription (services/consent/countries.go). The services read
		// the whole stream anyway, so this shows them nothing new.
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", contract.SubjectRoot + ".*." + tenantDomain + ".*"}},
	}
}

// The consent writer's replication (platform/broker, replication.go): its
// stream, its snapshot bucket and the bucket's stream.
const (
	consentState     = "LETHE_CONSENT_STATE"
	consentStatePub  = "lethe-replication.consent.>"
	snapshotBucket   = "lethe-consent-snapshots"
	snapshotStream   = "OBJ_" + snapshotBucket
	snapshotSubjects = "$O." + snapshotBucket + ".>"
)

// ConsentReplicaUser is the user of the consent read replicas.
const ConsentReplicaUser = "consent-replica"

// consentWriter is what the consent writer may beside any service:
// provision the replication stream, publish its entries on it and read
// back the newest entry of each of its NATS subjects (at start, to find
// its store behind what it published), and provision the snapshot
// bucket, put snapshots in it, list, read and delete them.
func consentWriter() []string {
	return append([]string{
		consentStatePub,
		"$JS.API.STREAM.INFO." + consentState,
		"$JS.API.STREAM.CREATE." + consentState,
		"$JS.API.STREAM.UPDATE." + consentState,
		"$JS.API.STREAM.MSG.GET." + consentState,
		"$JS.API.DIRECT.GET." + consentState + ".>",
		"$JS.API.STREAM.CREATE." + snapshotStream,
		"$JS.API.STREAM.PURGE." + snapshotStream,
		snapshotSubjects,
	}, snapshotReader()...)
}

// snapshotReader is what reading the snapshot bucket takes: its stream's
// configuration, the latest message of an object's metadata subject, and
// ordered consumers (without acknowledgements) over its chunks and
// metadata, which the client deletes when done.
func snapshotReader() []string {
	return []string{
		"$JS.API.STREAM.INFO." + snapshotStream,
		"$JS.API.STREAM.MSG.GET." + snapshotStream,
		"$JS.API.DIRECT.GET." + snapshotStream + ".>",
		"$JS.API.CONSUMER.CREATE." + snapshotStream,
		"$JS.API.CONSUMER.CREATE." + snapshotStream + ".>",
		"$JS.API.CONSUMER.DELETE." + snapshotStream + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + snapshotStream + ".*",
		"$JS.FC." + snapshotStream + ".>",
	}
}

// ConsentReplica returns the permissions of the consent read replicas'
// user: read the replication stream with ordered consumers (no
// acknowledgements, no durable state) and read the snapshot bucket.
// Nothing else: a replica publishes no event and writes no state. It may
// read the platform streams' configuration, because the kit's host
// checks at every start that they exist as configured (broker.EnsureStream,
// platform/service), a replica's too; creating or changing them stays the
// services'.
func ConsentReplica() *server.Permissions {
	pub := append([]string{
		"$JS.API.STREAM.INFO." + contract.StreamName,
		"$JS.API.STREAM.INFO." + deadLetters,
		"$JS.API.STREAM.INFO." + erasures,
		"$JS.API.STREAM.INFO." + consentState,
		"$JS.API.CONSUMER.CREATE." + consentState + ".>",
		"$JS.API.CONSUMER.DELETE." + consentState + ".*",
		"$JS.API.CONSUMER.INFO." + consentState + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + consentState + ".*",
	}, snapshotReader()...)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
	}
}

// tenantDomain is the domain of the registry's tenant events
// (lethe.<tenant>.tenant.registered).
const tenantDomain = "tenant"

// ackSubjects are the subjects on which a message of consumer (a name, or
// "*") of stream is acknowledged, in the server's v1 and v2 formats
// ($JS.ACK.<stream>.<consumer>… and $JS.ACK.<domain>.<account>.<stream>.<consumer>…).
func ackSubjects(stream, consumer string) []string {
	if consumer == "*" {
		return []string{"$JS.ACK." + stream + ".>", "$JS.ACK.*.*." + stream + ".>"}
	}
	return []string{"$JS.ACK." + stream + "." + consumer + ".>", "$JS.ACK.*.*." + stream + "." + consumer + ".>"}
}

// Subscriber returns the permissions of system's user for tenant: read the
// LETHE stream's configuration; create, read, pull from and acknowledge its
// own durable consumers, one per kind of event a system answers
// (contract.KindConsumerName); publish its own outcomes; receive replies on
// its own inbox prefix (InboxPrefix) only. After a restore from a backup it
// replays its tenant's erasures from the erasure ledger: it reads the
// ledger's configuration and creates, reads, pulls from and deletes its
// replay consumer (contract.ReplayConsumerName), which acknowledges
// nothing. Everything else is denied: event subjects, other consumers,
// direct reads of the streams, other outcome subjects, other inboxes.
//
// A consumer may be created only on the subject that names both it and its
// single filter, $JS.API.CONSUMER.CREATE.LETHE.<consumer>.lethe.<tenant>.<domain>.<event>,
// and the server refuses a request whose body's filter differs from the
// subject's. The form without the filter in the subject, which is also the
// only form for several filters, is not allowed at all: the server does not
// check filters carried in the body against permissions (nats-server issue
// #6180), so a system could otherwise point its consumer at another
// tenant's events.
func Subscriber(system, tenant string) (*server.Permissions, error) {
	if _, err := contract.ConsumerName(system, tenant); err != nil {
		return nil, err
	}
	if tenant == contract.AllTenants {
		return nil, fmt.Errorf("natsauth: a subscribing system's user is for one tenant, not %q", tenant)
	}
	outcome, err := contract.OutcomeSubject(tenant, system)
	if err != nil {
		return nil, err
	}
	stream := contract.StreamName
	pub := []string{outcome, "$JS.API.STREAM.INFO." + stream, "$JS.API.STREAM.INFO." + erasures}
	for _, kind := range slices.Concat(contract.Directives, contract.Limits) {
		consumer, err := contract.KindConsumerName(system, tenant, kind)
		if err != nil {
			return nil, err
		}
		filter, err := contract.KindSubject(tenant, kind)
		if err != nil {
			return nil, err
		}
		pub = append(pub,
			"$JS.API.CONSUMER.CREATE."+stream+"."+consumer+"."+filter,
			"$JS.API.CONSUMER.INFO."+stream+"."+consumer,
			"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer,
		)
		pub = append(pub, ackSubjects(stream, consumer)...)
	}
	replay, err := contract.ReplayConsumerName(system, tenant)
	if err != nil {
		return nil, err
	}
	erasureFilter, err := contract.KindSubject(tenant, contract.KindErasureRequested)
	if err != nil {
		return nil, err
	}
	pub = append(pub,
		"$JS.API.CONSUMER.CREATE."+erasures+"."+replay+"."+erasureFilter,
		"$JS.API.CONSUMER.INFO."+erasures+"."+replay,
		"$JS.API.CONSUMER.MSG.NEXT."+erasures+"."+replay,
		"$JS.API.CONSUMER.DELETE."+erasures+"."+replay,
	)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(system, tenant) + ".>"}},
	}, nil
}

// InboxPrefix is the reply-subject prefix system's connection for tenant
// must use (nats.CustomInboxPrefix): the only subjects its user may
// subscribe to. With the default "_INBOX" it could not receive replies,
// and a user allowed "_INBOX.>" could read what the server delivers to
// every other system.
func InboxPrefix(system, tenant string) string {
	return "_INBOX." + system + "@" + tenant
}

// System names a subscribing system of a tenant.
type System struct{ ID, Tenant string }

// Connect returns the permissions of lethe-connect's user (ConnectUser)
// answering systems: for each, exactly what Subscriber gives that system's
// own user (its durable consumers, its replay consumer, its outcome
// subject), and replies on the runner's own inbox prefix,
// InboxPrefix of ConnectUser ("_INBOX.lethe-connect"), the default of
// lethe-connect --nats-user lethe-connect.
//
// The systems are listed, not matched by a pattern: a consumer's name is
// one subject token, and NATS wildcards match whole tokens only, so no
// permission can say "consumers whose name starts with a prefix"; a
// wildcard consumer would let the runner pull an SDK system's events away
// from it and report any system's outcome. A system becomes WEBHOOK or
// CONNECTOR in the registry, and the operator adds it here, as an SDK
// system gets its own user; until then the runner's subscriber for it is
// refused by the server and retried at every resync (logged, never
// silent).
func Connect(systems ...System) (*server.Permissions, error) {
	pub := []string{"$JS.API.STREAM.INFO." + contract.StreamName, "$JS.API.STREAM.INFO." + erasures}
	for _, sys := range systems {
		p, err := Subscriber(sys.ID, sys.Tenant)
		if err != nil {
			return nil, err
		}
		for _, subject := range p.Publish.Allow {
			if !slices.Contains(pub, subject) {
				pub = append(pub, subject)
			}
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX." + ConnectUser + ".>"}},
	}, nil
}
