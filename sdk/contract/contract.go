// Package contract is Lethe's event contract in code: the stream, the
// NATS subject layout, the CloudEvents headers and the payload encoding that
// every publisher and subscriber shares. The contract itself is documented
// in proto/lethe/events/v1/events.proto; this package derives everything it
// can from that proto, so the two cannot drift apart.
//
// NATS subjects (the names of this package that end in Subject name NATS
// subjects, never the data subject):
//
//	lethe.<tenant>.<domain>.<event>   an Event, e.g. lethe.clio.erasure.requested
//	lethe.<tenant>.outcome.<system>   an Outcome reported by one system, or
//	                                  an OutcomeBatch of several of its outcomes
//
// where "<domain>.<event>" is the name of the Event.body field that is set,
// with its one underscore turned into a dot.
package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

const (
	// StreamName is the JetStream stream that carries every Lethe event.
	StreamName = "LETHE"
	// SubjectRoot is the first token of every Lethe NATS subject.
	SubjectRoot = "lethe"
	// AllSubjects is the stream's NATS subject filter.
	AllSubjects = SubjectRoot + ".>"
	// OutcomeDomain is the NATS subject token that marks an outcome.
	OutcomeDomain = "outcome"
	// ErasureLedgerStream is the JetStream stream that keeps every
	// erasure directive of StreamName long after StreamName let it go, so
	// that a system restored from a backup can apply again the erasures
	// made since the backup (subscriber.Subscriber.ReplayErasures).
	ErasureLedgerStream = StreamName + "_ERASURES"
)

// CloudEvents attributes carried as NATS headers (binary content mode).
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderType        = "ce-type"
	HeaderSource      = "ce-source"
	HeaderTime        = "ce-time"
	// HeaderCloudEventsSubject is the CloudEvents subject: the object the
	// event is about (the cause's id: a request, rule or record id), never
	// the data subject.
	HeaderCloudEventsSubject = "ce-subject"
	// HeaderSubject is the former name of HeaderCloudEventsSubject.
	//
	// Deprecated: use HeaderCloudEventsSubject; "subject" alone means the
	// data subject in Lethe.
	HeaderSubject     = HeaderCloudEventsSubject
	HeaderContentType = "content-type"

	// SpecVersion is the CloudEvents version Lethe speaks.
	SpecVersion = "1.0"
	// ContentType is the payload encoding: binary protobuf.
	ContentType = "application/protobuf"
)

// tokenPattern is what tenant and system ids look like: one NATS subject
// token, lower-case, no wildcards or dots.
var tokenPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidToken reports whether id can be a tenant or system id.
func ValidToken(id string) bool { return tokenPattern.MatchString(id) }

// Kind names an event body: "erasure.requested", "restriction.lifted".
type Kind string

// Kinds of Event body, as subject tokens.
const (
	KindErasureRequested       Kind = "erasure.requested"
	KindRectificationRequested Kind = "rectification.requested"
	KindAccessRequested        Kind = "access.requested"
	KindConsentWithdrawn       Kind = "consent.withdrawn"
	KindObjectionRecorded      Kind = "objection.recorded"
	KindRestrictionApplied     Kind = "restriction.applied"
	KindRestrictionLifted      Kind = "restriction.lifted"
	KindTenantRegistered       Kind = "tenant.registered"
	KindTenantChanged          Kind = "tenant.changed"
	KindTenantRemoved          Kind = "tenant.removed"
	KindSystemRegistered       Kind = "system.registered"
	KindSystemChanged          Kind = "system.changed"
	KindSystemRemoved          Kind = "system.removed"
)

// Directives are the kinds that ask a system to act on data.
var Directives = []Kind{KindErasureRequested, KindRectificationRequested, KindAccessRequested}

// Limits are the kinds that tell a system to stop or narrow processing.
var Limits = []Kind{KindConsentWithdrawn, KindObjectionRecorded, KindRestrictionApplied, KindRestrictionLifted}

var bodyOneof = (&eventsv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("body")

// kindOfField turns the body field "erasure_requested" into the kind
// "erasure.requested".
func kindOfField(fd protoreflect.FieldDescriptor) Kind {
	return Kind(strings.Replace(string(fd.Name()), "_", ".", 1))
}

// KindOf returns the kind of ev's body, or an error when no body is set.
func KindOf(ev *eventsv1.Event) (Kind, error) {
	fd := ev.ProtoReflect().WhichOneof(bodyOneof)
	if fd == nil {
		return "", errors.New("event has no body")
	}
	return kindOfField(fd), nil
}

// TypeOf returns the CloudEvents type of ev: the full name of its body
// message, "lethe.events.v1.ErasureRequested".
func TypeOf(ev *eventsv1.Event) (string, error) {
	fd := ev.ProtoReflect().WhichOneof(bodyOneof)
	if fd == nil {
		return "", errors.New("event has no body")
	}
	return string(fd.Message().FullName()), nil
}

// EventSubject returns the NATS subject ev is published on.
func EventSubject(ev *eventsv1.Event) (string, error) {
	kind, err := KindOf(ev)
	if err != nil {
		return "", err
	}
	return KindSubject(ev.GetTenantId(), kind)
}

// KindSubject returns the NATS subject of events of kind for tenant; tenant "*"
// matches every tenant.
func KindSubject(tenant string, kind Kind) (string, error) {
	if tenant != "*" && !ValidToken(tenant) {
		return "", fmt.Errorf("tenant id %q is not a lower-case token", tenant)
	}
	return SubjectRoot + "." + tenant + "." + string(kind), nil
}

// OutcomeSubject returns the NATS subject system publishes its outcomes for
// tenant on. Because it names the system, NATS permissions can let a
// system publish only its own outcomes.
func OutcomeSubject(tenant, system string) (string, error) {
	if !ValidToken(tenant) {
		return "", fmt.Errorf("tenant id %q is not a lower-case token", tenant)
	}
	if !ValidToken(system) {
		return "", fmt.Errorf("system id %q is not a lower-case token", system)
	}
	return SubjectRoot + "." + tenant + "." + OutcomeDomain + "." + system, nil
}

// AllOutcomes is the NATS subject filter of every outcome of every tenant.
const AllOutcomes = SubjectRoot + ".*." + OutcomeDomain + ".*"

// ParseOutcomeSubject returns the tenant and system an outcome NATS
// subject names.
func ParseOutcomeSubject(natsSubject string) (tenant, system string, ok bool) {
	parts := strings.Split(natsSubject, ".")
	if len(parts) != 4 || parts[0] != SubjectRoot || parts[2] != OutcomeDomain ||
		!ValidToken(parts[1]) || !ValidToken(parts[3]) {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// EventHeaders returns the CloudEvents headers of ev. The caller adds trace
// context.
func EventHeaders(ev *eventsv1.Event) (nats.Header, error) {
	ceType, err := TypeOf(ev)
	if err != nil {
		return nil, err
	}
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, ev.GetId())
	h.Set(HeaderSpecVersion, SpecVersion)
	h.Set(HeaderID, ev.GetId())
	h.Set(HeaderType, ceType)
	h.Set(HeaderSource, ev.GetSource())
	h.Set(HeaderTime, ev.GetOccurredAt().AsTime().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderCloudEventsSubject, ev.GetCause().GetId())
	h.Set(HeaderContentType, ContentType)
	return h, nil
}

// OutcomeHeaders returns the CloudEvents headers of an outcome. Its id is
// derived from the event and the system, so a re-sent outcome de-duplicates
// in the stream like the first.
func OutcomeHeaders(o *eventsv1.Outcome) nats.Header {
	id := OutcomeID(o.GetEventId(), o.GetSystemId())
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, id)
	h.Set(HeaderSpecVersion, SpecVersion)
	h.Set(HeaderID, id)
	h.Set(HeaderType, string(o.ProtoReflect().Descriptor().FullName()))
	h.Set(HeaderSource, "system/"+o.GetSystemId())
	h.Set(HeaderTime, o.GetReportedAt().AsTime().UTC().Format(time.RFC3339Nano))
	h.Set(HeaderCloudEventsSubject, o.GetCause().GetId())
	h.Set(HeaderContentType, ContentType)
	return h
}

// OutcomeBatchType is the ce-type of an OutcomeBatch.
var OutcomeBatchType = string((&eventsv1.OutcomeBatch{}).ProtoReflect().Descriptor().FullName())

// OutcomeBatchHeaders returns the headers of a batch of system's outcomes:
// CloudEvents attributes of the batch, and a Nats-Msg-Id made from the
// outcomes' ids, so that a batch published again is stored once.
func OutcomeBatchHeaders(system string, outcomes []*eventsv1.Outcome) nats.Header {
	ids := make([]string, 0, len(outcomes))
	var latest time.Time
	for _, o := range outcomes {
		ids = append(ids, OutcomeID(o.GetEventId(), o.GetSystemId()))
		if at := o.GetReportedAt().AsTime(); at.After(latest) {
			latest = at
		}
	}
	slices.Sort(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	id := "batch/" + system + "/" + hex.EncodeToString(sum[:16])
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, id)
	h.Set(HeaderSpecVersion, SpecVersion)
	h.Set(HeaderID, id)
	h.Set(HeaderType, OutcomeBatchType)
	h.Set(HeaderSource, "system/"+system)
	h.Set(HeaderTime, latest.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderContentType, ContentType)
	return h
}

// UnmarshalOutcomes decodes a message of an outcome subject: one Outcome,
// or an OutcomeBatch when its ce-type says so.
//
// Unknown fields are discarded: an owner stores the outcomes it records,
// and a field no rule has checked must not ride along unbounded.
func UnmarshalOutcomes(header nats.Header, data []byte) ([]*eventsv1.Outcome, error) {
	if header.Get(HeaderType) == OutcomeBatchType {
		b := &eventsv1.OutcomeBatch{}
		if err := discardUnknown.Unmarshal(data, b); err != nil {
			return nil, err
		}
		return b.Outcomes, nil
	}
	o := &eventsv1.Outcome{}
	if err := discardUnknown.Unmarshal(data, o); err != nil {
		return nil, err
	}
	return []*eventsv1.Outcome{o}, nil
}

var discardUnknown = proto.UnmarshalOptions{DiscardUnknown: true}

// OutcomeID is the id of system's outcome for event eventID.
func OutcomeID(eventID, system string) string { return eventID + "/" + system }

// Marshal encodes a payload deterministically.
func Marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// AllTenants is the tenant scope of a subscription to every tenant's
// events; [KindSubject] accepts it in place of a tenant id.
const AllTenants = "*"

// Keys of the metadata every system's durable consumer carries. A
// MAX_DELIVERIES advisory names only the stream and the consumer; with these
// an operator, or Lethe's task tracker, maps the consumer back to the
// system and tenant scope it serves.
const (
	MetadataSystem = "lethe.system"
	MetadataTenant = "lethe.tenant"
	// MetadataKind is the event kind a system's consumer delivers.
	MetadataKind = "lethe.kind"
)

// allTenantsConsumer stands for [AllTenants] in a consumer name, where "*"
// is not allowed. It cannot be a tenant id: ids begin with a letter or
// digit.
const allTenantsConsumer = "_all"

// ConsumerName returns the name of the durable consumer through which
// system reads tenant's events: "<system>@<tenant>", or "<system>@_all" for
// [AllTenants]. One system has one consumer per tenant scope, so NATS
// permissions can grant a system its own consumers and no other; "@" occurs
// in no id, so no two pairs share a name.
func ConsumerName(system, tenant string) (string, error) {
	if !ValidToken(system) {
		return "", fmt.Errorf("system id %q is not a lower-case token", system)
	}
	switch {
	case tenant == AllTenants:
		tenant = allTenantsConsumer
	case !ValidToken(tenant):
		return "", fmt.Errorf("tenant id %q is not a lower-case token", tenant)
	}
	return system + "@" + tenant, nil
}

// kindSeparator joins a system's consumer name and a kind in
// [KindConsumerName]. It occurs in no id and no kind, and NATS allows it in
// consumer names, which may not contain ".".
const kindSeparator = "~"

// KindConsumerName returns the name of the durable consumer through which
// system reads tenant's events of one kind: "<system>@<tenant>~<domain>_<event>",
// e.g. "newsletter@clio~erasure_requested". Each consumer has a single
// filter subject, [KindSubject] of the same kind, so that the server's
// permission check of the consumer's creation
// ($JS.API.CONSUMER.CREATE.<stream>.<consumer>.<filter>) sees both the name
// and the filter: NATS permissions can then hold a system to its own
// tenant's events, which a consumer with several filters would escape
// (nats-server issue #6180). Only directives and limits have one.
func KindConsumerName(system, tenant string, kind Kind) (string, error) {
	base, err := ConsumerName(system, tenant)
	if err != nil {
		return "", err
	}
	if !slices.Contains(Directives, kind) && !slices.Contains(Limits, kind) {
		return "", fmt.Errorf("%q is not a directive or limit a system answers", kind)
	}
	return base + kindSeparator + strings.Replace(string(kind), ".", "_", 1), nil
}

// replaySuffix ends the name of a system's replay consumer. No kind maps
// to it: kinds become "<domain>_<event>" with an event that is a verb.
const replaySuffix = kindSeparator + "erasure_replay"

// ReplayConsumerName returns the name of the consumer through which system
// replays tenant's erasures from [ErasureLedgerStream] after a restore:
// "<system>@<tenant>~erasure_replay". It is created on the subject that
// names it and its filter, [KindSubject] of the erasure kind, like the
// kinds' consumers ([KindConsumerName]), so that NATS permissions hold the
// replay to the system's own tenant; one name per system and tenant also
// keeps two replays of the same system from splitting the directives
// between them.
func ReplayConsumerName(system, tenant string) (string, error) {
	base, err := ConsumerName(system, tenant)
	if err != nil {
		return "", err
	}
	return base + replaySuffix, nil
}
