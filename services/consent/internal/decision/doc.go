// Package decision is the consent service's decision engine: it answers
// "may subject X's data be processed for purpose P, and why?" in process,
// from state the service has already committed. Internal systems ask before
// every e-mail, tracking call or export, so Check is built to answer in well
// under a microsecond without allocating.
//
// # Evaluation order
//
// Decide applies these rules in order; the first that matches decides.
//
//  1. Restriction (Art. 18): an active restriction covering the purpose, or
//     all processing, stops it — even a strictly necessary purpose, because
//     Art. 18(2) leaves storage only. RESTRICTED, with the restriction's id.
//     A purpose declared storage only (Purpose.StorageOnly: a backup, an
//     archive) is that exception and goes on to the rules below.
//  2. Eligibility: a role the purpose excludes (Clio: never marketing to
//     students, whatever they clicked) is INELIGIBLE_ROLE; an age below the
//     purpose's minimum, or below the Art. 8 age of digital consent of the
//     subject's own country when the purpose asks for it (Clevio), is
//     UNDER_AGE. Eligibility says who may be asked at all, so it comes
//     before the purpose's basis and applies to necessary purposes too. An
//     age gate fails closed: an unknown age (0) is AGE_UNKNOWN, and so is a
//     missing country — after Index.Check has put in the tenant's — unless
//     the age meets every state's (16). The age of digital consent is the
//     one in force at the decision's time, except that a consent-based
//     purpose's consent keeps the age in force when it was given where the
//     change says so (digital_consent_age.json: Denmark's 2024 change).
//  3. Necessary: a strictly necessary purpose is allowed without consent
//     and cannot be refused or withdrawn. NECESSARY.
//  4. Objection (Art. 21): an objection to direct marketing stops every
//     direct-marketing purpose, whatever its basis (absolute, Art. 21(2)-(3));
//     an objection to legitimate interests stops every purpose based on
//     Art. 6(1)(e) or (f) (Art. 21(1)); an objection to listed purposes stops
//     those. OBJECTED, with the objection's id. A contract-based
//     transactional message is not direct marketing and goes on (Clevio).
//  5. Global Privacy Control: a GPC signal opts the subject out of purposes
//     declared to honour it (an automated objection, Art. 21(5)). GPC_OPT_OUT.
//  6. Legal basis (Art. 6(1)): consent needs a live consent record (below);
//     legitimate interests, contract, and legal obligation, vital interests
//     or public task allow with their own reasons.
//
// # Consent records
//
// A subject keeps, per purpose, the latest record the service committed,
// with the time the subject gave it (Consent.GivenAt: an imported or paper
// consent is given before it is recorded; otherwise when recorded). A
// GRANT starts a consent; DENY and WITHDRAW end it (Art. 7(3)); a grant
// is EXPIRED once now reaches its ExpiresAt. A RENEW of a live grant extends
// it — the renewal's ExpiresAt replaces the grant's — but keeps the time of
// the grant it extends, because extending a consent does not show the
// subject a new notice: a grant given before a material notice change still
// needs consent again (RECONSENT_REQUIRED), renewed or not. A RENEW with no
// live grant under it (none, denied, withdrawn or expired) counts as a new
// grant at its own time: the service records a renewal only on the
// subject's own act, and a lapsed consent cannot be extended, only given
// again.
//
// Records are folded in the order Subject.SetConsent is called, not by
// their times: the service commits them in order, and trusting timestamps
// would let a clock step backwards drop a withdrawal. A subject is
// therefore loaded by replaying its history oldest first; the service
// refuses a record given before the latest one, so that the order of the
// history is the order things happened. A decision at a past time replays
// the records recorded by then into a Subject of its own (Index.Decide).
//
// # Concurrency and cost
//
// Index holds every tenant. Purposes and the tenant table are immutable
// maps swapped whole on change (purposes change rarely), so readers load
// them with one atomic read. Subjects are spread over 64 shards per tenant
// by a hash of the subject id, each behind its own RWMutex: readers of
// different subjects rarely share a lock word, and a writer blocks only the
// readers of its shard.
//
// # Memory
//
// The Index keeps only what a decision needs: per subject and purpose the
// latest record (its action, the times it was given and granted and when
// it expires, and its id), and the subject's objections and active
// restrictions where it has any. History stays in the service's store. A
// subject's state is one byte string (codec.go): purposes as a one-byte
// index into the tenant's table of purpose ids, times as varint
// differences (an expiry as whole seconds after the grant), and ids as
// type ID keeps them — a UUIDv7 record id, whose first 48 bits are a time
// close to the grant's, as 11 bytes; other UUIDs as 16; anything else (an
// imported id) as its text. A subject of five records takes about 130
// bytes plus its id.
//
// Each shard appends its subjects' byte strings to one arena and finds
// them through a map from the subject id's 64-bit hash to an offset (the
// rare subject whose hash another holds goes to a small map by id). A
// change appends the subject's new state; the old becomes garbage, which
// a compaction into a fresh arena drops once it is half the arena. The
// arena and maps hold no pointers, so the garbage collector neither scans
// them nor counts millions of objects, and resident memory stays close to
// the bytes of state.
//
// Check finds the subject under its shard's read lock and reads, in one
// pass over its few cache lines, the purpose's record and the first
// objection and restriction covering it (facts), then decides without the
// lock. A text id in a decision shares the arena's bytes, which are never
// written again once appended, so Check does not allocate. Update decodes
// the subject into a Subject, lets the caller change it and encodes it
// again: writes allocate, reads do not.
//
// # Snapshots
//
// WriteSnapshot writes some or all tenants — their revision, country,
// purposes and every subject's byte string as the arena holds it — and
// ReadSnapshot reads them back, checksummed and validated whole before
// anything is installed (snapshot.go has the format). The service starts
// from one instead of reading every record in history; a read replica
// restores one before following the changes after it. What is written is
// a Cut: the state at one instant, kept apart from the changes made while
// it is written at the cost of the subjects they change, not of a copy
// of the index (cut.go).
//
// NextExpiry is not offered: answering it cheaply needs an ordered index of
// every live expiry keyed by (time, tenant, subject, purpose) and a cursor
// for ties, which is better built with the service's Watch.
package decision
