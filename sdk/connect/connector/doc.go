// Package connector answers Lethe's events for a processor that has a
// deletion or suppression HTTP API (an analytics property, a mailing list,
// an advertising audience) from a declarative file: no code per vendor.
//
// A [Definition] is loaded from a YAML file ([Load], [LoadFile], [Parse])
// or taken from the builtin ones ([Builtin]: google-analytics,
// campaign-monitor, meta-custom-audiences, linkedin-matched-audiences,
// hotjar). [Definition.Handler] turns it, with one registered system's
// parameters and secrets, into a [subscriber.Handler]; the lethe-connect
// runner (package connect) registers it for the kinds in
// [Definition.Kinds], so the connector inherits the subscriber's durable
// consumer, ledger, exactly-once answers and outcome reporting.
//
// # The file
//
//	name: meta-custom-audiences          # lower-case, dashes
//	description: one line for operators
//	document:                            # the vendor document followed
//	  url: https://...
//	  version: Graph API v25.0           # version or date of the document
//	answers: [erasure.requested, consent.withdrawn]
//	consent:                             # only with consent.withdrawn
//	  purpose_param: purpose_id          # the parameter naming the purpose
//	params:                              # non-secret, from the registry
//	  - name: audience_id
//	    description: the Custom Audience id
//	    pattern: '^[0-9]{1,32}$'         # anchored; every value is checked
//	    optional: false
//	identifier:
//	  type: email                        # email, phone, account_id, customer_number, device_id
//	  form: sha256                       # plain, sha256 (of the normalised value), md5 (of the lower-cased e-mail)
//	  when_missing: failed               # or not_found: an erasure with no such identifier
//	auth:                                # secret file names in the system's secrets directory
//	  type: bearer                       # token_file
//	  # basic: username_file, password_file (optional)
//	  # oauth2_client_credentials: token_url, client_id_file, client_secret_file, scopes
//	  # none
//	  token_file: access-token
//	rate_limit: {per_second: 1, burst: 1} # per connector instance
//	request:
//	  method: DELETE
//	  url: https://graph.facebook.com/{{.Params.api_version}}/{{.Params.audience_id}}/users
//	  headers: {X-Example: '{{.EventID}}'}
//	  body: '{"payload": {"schema": "EMAIL_SHA256", "data": [{{.Identifier}}]}}'
//	responses:                           # first match wins
//	  - status: [200]
//	    match: [{path: num_invalid_entries, equals: ["0"]}]
//	    outcome: done                    # done, not_found, retry, failed, pending
//	message: error.message               # where a failure's vendor message is
//	poll:                                # only for asynchronous jobs
//	  extract: {job_id: job.id}          # values from the first answer
//	  request: {method: GET, url: 'https://api.example.com/jobs/{{.Extract.job_id}}'}
//	  interval: 2s                       # doubled after each poll ...
//	  max_interval: 1m                   # ... up to this
//	  deadline: 1h                       # then the event is delivered again later
//	  responses: [...]                   # pending keeps polling
//
// Templates are Go text/template holding text and values only (no
// functions, conditions, loops or variables, refused at load), and only
// these values:
// .Params.<name>, .Identifier (in the form the file names), .EventID (the
// event's id, the idempotency key to send where the vendor takes one),
// .Tenant, .RequestTime (RFC 3339, UTC) and, in a poll request,
// .Extract.<name>. Every value prints escaped for where it lands, by
// construction: in a body as a JSON string literal with its quotes (write
// {"id": {{.Identifier}}}, never "{{.Identifier}}"), in a URL
// percent-encoded, in a header as it is but refused if it holds a line
// break. The URL's scheme and host are fixed text, https only. A file is
// checked by rendering every template with sample values at load, so a
// body that is not JSON or a reference to an undeclared parameter fails
// there, with the field named. Unknown keys are refused.
//
// # Answers
//
// A response selector is names and array indices joined by dots
// ("elements.0.status"); a match holds when the value there, as text
// (numbers as written, true, false, null), is one of equals. Without a
// matching rule, 429 and 5xx mean retry and anything else failed: an
// answer the file does not recognise fails closed. Outcomes map as
// follows:
//
//   - done: ERASED for an erasure, APPLIED for a consent withdrawal;
//   - not_found: NOT_FOUND (APPLIED for a withdrawal: nothing to remove);
//   - failed: FAILED, with the HTTP status and the vendor's message at
//     message, without control characters or the identifier sent, cut to
//     300 characters;
//   - retry: the request is tried up to three times in all, after the
//     vendor's Retry-After (seconds or a date) if it is at most
//     [Config.MaxRetryAfter], and no request of the instance leaves before
//     it; otherwise the handler returns an error and the subscriber
//     delivers the event again after its back-off;
//   - pending: the job is polled (see poll) until another outcome or the
//     deadline.
//
// A 401 with oauth2_client_credentials drops the cached token and tries
// once with a new one. Redirects are not followed. At most 64 KiB of an
// answer is read.
//
// # Identifiers
//
// The handler fetches the subject's identifiers with [subscriber.Event.Identifiers]
// (the claim check), keeps those of the file's type, and encodes a plain
// one in the file's form exactly as common.proto's IdentifierForm says
// (and as the DSAR service does): sha256 is the lower-case hex SHA-256 of
// the e-mail address trimmed and lower-cased (what Meta and LinkedIn ask),
// of a phone number as E.164, of anything else trimmed and lower-cased;
// md5 is the lower-case hex MD5 of the trimmed, lower-cased e-mail
// (Mailchimp's subscriber hash). An identifier the claim check already
// gives in the file's form is used as it is. Each distinct value is one
// vendor request; the event is ERASED if any was removed, NOT_FOUND if
// every one was absent. An erasure with no identifier of the type is
// FAILED ("erase by hand"; when_missing: not_found answers NOT_FOUND
// instead), a limit NOT_APPLICABLE. Identifiers and their hashes are never
// logged.
//
// # Secrets
//
// Secret files are read from [Config.SecretsDir] (at the runner,
// <secrets-dir>/<tenant>/<system>) at every use, trimmed, so a rotated
// key takes effect without a restart; [Definition.Handler] checks that
// each is readable. An OAuth2 access token is cached until 30 s before
// its expires_in.
package connector
