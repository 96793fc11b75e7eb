package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

const dsarHelp = `
Usage: lethe dsar <command> [flags]

Commands:
  create         file a data-subject request (every right of Arts. 15-22)
  list           a tenant's requests, by state or deadline
  show           one request: deadlines, verification, history, each
                 system's answer, what was kept and why
  verify         start verification, enter a code, or attest identity
  complete-task  record the answer of a system answered by hand
  extend         extend the statutory deadline (Art. 12(3): once, in the
                 first month, up to two more months, with a reason)
  reject         refuse a request, with the reason the subject is told
  cancel         cancel a request the subject withdrew
  export         download the access or portability package
  receipt        the completion receipt of a closed request

Example — an erasure, verified by an operator, answered by hand:
  ID=$(lethe dsar create --tenant cleura --subject cust-7 --type erasure --email ada@example.com -o id)
  lethe dsar verify --tenant cleura --id $ID --attest manual --evidence ticket-311
  lethe dsar complete-task --tenant cleura --id $ID --system portal --outcome erased
  lethe dsar complete-task --tenant cleura --id $ID --system billing --outcome retained \
      --retain-categories user.financial --basis legal_obligation \
      --basis-detail "Swedish Accounting Act (1999:1078) ch. 7 § 2" --until 2033-12-31 \
      --exemption legal_obligation --law "Bokföringslagen (1999:1078) 7 kap. 2 §"
  lethe dsar show --tenant cleura --id $ID
`

// dsarCommands are the subcommands of "lethe dsar"; the usage text lists each.
var dsarCommands = map[string]func([]string, io.Writer, io.Writer) int{
	"create":        dsarCreate,
	"list":          dsarList,
	"show":          dsarShow,
	"verify":        dsarVerify,
	"complete-task": dsarCompleteTask,
	"extend":        dsarExtend,
	"reject":        dsarReject,
	"cancel":        dsarCancel,
	"export":        dsarExport,
	"receipt":       dsarReceipt,
}

func runDSAR(args []string, stdout, stderr io.Writer) int {
	return subcommand("dsar", dsarHelp, dsarCommands, args, stdout, stderr)
}

func dsarCreate(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar create", `
Usage: lethe dsar create --tenant T --subject S --type TYPE [flags]

Files a request. It starts "received": nothing reaches any system until
identity is verified (lethe dsar verify). Deadlines run from its receipt:
now, or --received for a request that arrived before it is entered (a
letter); the GDPR's month and the tenant's SLA, kept apart.

Types: access, rectification, erasure, restriction, portability, objection,
consent_withdrawal, automated_decision_review.

Examples:
  lethe dsar create --tenant cleura --subject cust-7 --type erasure --email ada@example.com
  lethe dsar create --tenant clevenio --subject p-3 --type restriction --ground accuracy_contested
  lethe dsar create --tenant clevio --subject u-9 --type objection --scope direct_marketing
  lethe dsar create --tenant clio --subject s-42 --type consent_withdrawal --purposes newsletter
  lethe dsar create --tenant clio --subject s-43 --type access --received 2026-01-30T14:00:00+01:00
`, stdout, stderr)
	f := &createFlags{}
	f.register(o)
	requestID := o.requestIDFlag()
	o.idOutputFlag("dsar id")
	if code := o.start(args, "subject", "type"); code >= 0 {
		return code
	}
	defer o.done()
	req, err := f.request(o.tenant)
	if err != nil {
		return o.usage(err.Error())
	}
	req.RequestId = *requestID
	resp, err := o.cl.dsar.CreateRequest(o.ctx, req)
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

// createFlags are the flags of "lethe dsar create": the request's type
// and the details each type takes.
type createFlags struct {
	subject, typ, cats, purposes, email, phone, account, ground, scope string
	action, agent, decision, statement, received                       string
}

func (f *createFlags) register(o *opCmd) {
	o.fs.StringVar(&f.subject, "subject", "", "the subject's pseudonymous id (required)")
	o.fs.StringVar(&f.typ, "type", "", "the right exercised (required)")
	o.fs.StringVar(&f.cats, "categories", "", "comma-separated categories, for access, erasure, portability (default all)")
	o.fs.StringVar(&f.purposes, "purposes", "", "comma-separated purposes, for restriction, objection, consent_withdrawal")
	o.fs.StringVar(&f.email, "email", "", "the subject's e-mail address, an identifier systems look up (handed out only by claim check)")
	o.fs.StringVar(&f.phone, "phone", "", "the subject's phone number, an identifier")
	o.fs.StringVar(&f.account, "account", "", "the subject's account id, an identifier")
	o.fs.StringVar(&f.ground, "ground", "", "for restriction: accuracy_contested, unlawful_processing, legal_claims, objection_pending")
	o.fs.StringVar(&f.scope, "scope", "purposes", "for objection: purposes, legitimate_interests, direct_marketing")
	o.fs.StringVar(&f.action, "action", "erase", "for erasure: erase or anonymise")
	o.fs.StringVar(&f.agent, "agent", "", "filed by an agent: the reference of its authority (a power of attorney on file)")
	o.fs.StringVar(&f.decision, "decision", "", "for automated_decision_review: the tenant's reference of the decision")
	o.fs.StringVar(&f.statement, "statement", "", "for automated_decision_review: the subject's point of view")
	o.fs.StringVar(&f.received, "received", "", "when the request was received, RFC 3339, if before now (default now)")
}

// request builds the CreateRequest the flags describe; an error is a
// usage error, naming the flag.
func (f *createFlags) request(tenant string) (*dsarv1.CreateRequestRequest, error) {
	rt, err := enumFlag[dsarv1.RequestType]("type", f.typ)
	if err != nil {
		return nil, err
	}
	req := &dsarv1.CreateRequestRequest{TenantId: tenant, SubjectId: f.subject, Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}}
	if f.agent != "" {
		req.Requester = &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_AGENT, AuthorityReference: f.agent}
	}
	for _, id := range []struct {
		t commonv1.IdentifierType
		v string
	}{{commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, f.email}, {commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE, f.phone}, {commonv1.IdentifierType_IDENTIFIER_TYPE_ACCOUNT_ID, f.account}} {
		if id.v != "" {
			req.Identifiers = append(req.Identifiers, &commonv1.Identifier{Type: id.t, Value: id.v})
		}
	}
	if err := f.details(req, rt); err != nil {
		return nil, err
	}
	if f.received != "" {
		at, err := time.Parse(time.RFC3339, f.received)
		if err != nil {
			return nil, fmt.Errorf("--received: %w", err)
		}
		req.ReceivedAt = timestamppb.New(at)
	}
	return req, nil
}

// details sets the details of the request's type.
func (f *createFlags) details(req *dsarv1.CreateRequestRequest, rt dsarv1.RequestType) error {
	switch rt {
	case dsarv1.RequestType_REQUEST_TYPE_ACCESS:
		req.Access = &dsarv1.AccessDetails{Categories: categories(f.cats)}
	case dsarv1.RequestType_REQUEST_TYPE_ERASURE:
		a, err := enumFlag[eventsv1.ErasureAction]("action", f.action)
		if err != nil {
			return err
		}
		req.Erasure = &dsarv1.ErasureDetails{Categories: categories(f.cats), Action: a}
	case dsarv1.RequestType_REQUEST_TYPE_PORTABILITY:
		req.Portability = &dsarv1.PortabilityDetails{Categories: categories(f.cats)}
	case dsarv1.RequestType_REQUEST_TYPE_RESTRICTION:
		g, err := enumFlag[eventsv1.RestrictionGround]("ground", f.ground)
		if err != nil {
			return err
		}
		req.Restriction = &dsarv1.RestrictionDetails{Ground: g, PurposeIds: splitList(f.purposes)}
	case dsarv1.RequestType_REQUEST_TYPE_OBJECTION:
		sc, err := enumFlag[eventsv1.ObjectionScope]("scope", f.scope)
		if err != nil {
			return err
		}
		req.Objection = &dsarv1.ObjectionDetails{Scope: sc, PurposeIds: splitList(f.purposes)}
	case dsarv1.RequestType_REQUEST_TYPE_CONSENT_WITHDRAWAL:
		req.Withdrawal = &dsarv1.WithdrawalDetails{PurposeIds: splitList(f.purposes)}
	case dsarv1.RequestType_REQUEST_TYPE_AUTOMATED_DECISION_REVIEW:
		req.AutomatedDecision = &dsarv1.AutomatedDecisionDetails{DecisionReference: f.decision, Statement: f.statement}
	default:
		return errors.New("rectification carries corrected values, which this command does not take; use the API (CreateRequest)")
	}
	return nil
}

// requestColumns show requests; one whose fan-out keeps failing says so
// in its state, with the step that fails.
var requestColumns = columns[*dsarv1.Request]{
	header: []string{"ID", "TYPE", "SUBJECT", "STATE", "RECEIVED", "STATUTORY DUE", "SLA DUE"},
	row: func(r *dsarv1.Request) []any {
		d := r.GetDeadline()
		state := cell(r.State)
		if p := r.GetFanoutProblem(); p != nil {
			state += " (fan-out failing: " + cell(p.Step) + ")"
		}
		return []any{r.DsarId, r.Type, r.SubjectId, state, d.GetReceivedAt(), d.GetStatutoryDueAt(), d.GetSlaDueAt()}
	},
	id: (*dsarv1.Request).GetDsarId,
}

// printRequest shows one request as the subject's answer reads: where it
// stands, and each system's share with what was kept and why.
func printRequest(w io.Writer, r *dsarv1.Request) {
	requestColumns.print(w, r)
	if v := r.GetVerification(); v != nil {
		fmt.Fprintf(w, "\nverification: %s, verified %s\n", cell(v.Method), cell(v.Verified))
	}
	if p := r.GetFanoutProblem(); p != nil {
		fmt.Fprintf(w, "\nfan-out failing at step %s since %s, %d attempts, last %s; retried every sweep\nerror: %s\n",
			cell(p.Step), cell(p.FirstFailedAt), p.Attempts, cell(p.LastFailedAt), cell(p.Error))
	}
	if res := r.GetResult(); res != nil && len(res.Tasks) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "SYSTEM", "ANSWERS", "STATE", "OUTCOME", "ANSWERED", "REASON")
		for _, s := range res.Tasks {
			t.row(s.SystemId, s.AnswerMode, s.State, s.Outcome, s.AnsweredAt, s.Reason)
		}
		t.flush()
		for _, k := range res.Retained {
			fmt.Fprintf(w, "kept: %s on %s (%s) until %s; Art. 17(3) ground %s", cell(k.Categories), cell(k.LegalBasis), k.BasisDetail, cell(k.Until), cell(k.Exemption))
			if k.Law != "" {
				fmt.Fprintf(w, " under %s", k.Law)
			}
			fmt.Fprintln(w)
		}
		for _, h := range res.Held {
			fmt.Fprintf(w, "held: %s by hold %s (%s) until %s\n", cell(h.GetCategory().GetId()), h.HoldId, h.Reason, cell(h.Until))
		}
		fmt.Fprintf(w, "complete: %s\n", cell(res.Complete))
	}
	if rej := r.GetRejection(); rej != nil {
		fmt.Fprintf(w, "rejected: %s: %s\n", cell(rej.Reason), rej.Detail)
	}
	if len(r.History) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "AT", "FROM", "TO", "ACTOR", "NOTE")
		for _, h := range r.History {
			t.row(h.At, h.From, h.To, h.Actor, h.Note)
		}
		t.flush()
	}
}

func dsarList(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar list", `
Usage: lethe dsar list --tenant T [--state S,…] [--overdue | --due-soon DURATION] [--as-of TIME]

A request whose fan-out keeps failing (a neighbour of the DSAR service
unreachable or refusing) is marked in STATE with the failing step; lethe
dsar show tells the error and since when.

Examples:
  lethe dsar list --tenant clevenio --overdue
  lethe dsar list --tenant clevenio --overdue --as-of 2026-03-31T23:59:59+03:00
  lethe dsar list --tenant cleura --state in_progress,received -o json
`, stdout, stderr)
	var states string
	var overdue bool
	var dueSoon time.Duration
	o.fs.StringVar(&states, "state", "", "comma-separated states: "+strings.Join(tenantfile.EnumNames(dsarv1.RequestState(0).Descriptor()), ", "))
	o.fs.BoolVar(&overdue, "overdue", false, "only open requests past a deadline")
	o.fs.DurationVar(&dueSoon, "due-soon", 0, "only open requests due within this time (e.g. 168h)")
	var asOf string
	o.fs.StringVar(&asOf, "as-of", "", "states and deadlines as of this past time, RFC 3339 (default now)")
	o.idOutputFlag("dsar ids")
	if code := o.start(args); code >= 0 {
		return code
	}
	defer o.done()
	req := &dsarv1.ListRequestsRequest{TenantId: o.tenant}
	if asOf != "" {
		at, err := time.Parse(time.RFC3339, asOf)
		if err != nil {
			return o.usage("--as-of: " + err.Error())
		}
		req.AsOf = timestamppb.New(at)
	}
	for _, s := range splitList(states) {
		st, err := enumFlag[dsarv1.RequestState]("state", s)
		if err != nil {
			return o.usage(err.Error())
		}
		req.States = append(req.States, st)
	}
	switch {
	case overdue:
		req.Deadline = dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE
	case dueSoon > 0:
		req.Deadline = dsarv1.DeadlineFilter_DEADLINE_FILTER_DUE_SOON
		req.DueWithin = durationpb.New(dueSoon)
	}
	all, err := listAll(func(size int32, token string) (*dsarv1.ListRequestsResponse, error) {
		req.PageSize, req.PageToken = size, token
		return o.cl.dsar.ListRequests(o.ctx, req)
	})
	if err != nil {
		return o.fail(err)
	}
	return listed(o, all, all.Requests, requestColumns)
}

func dsarShow(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar show", `
Usage: lethe dsar show --tenant T --id DSAR_ID

Shows a request: deadlines (statutory and SLA), verification, a fan-out
that keeps failing (the step, the error, since when, how many attempts),
every system's task and outcome, everything kept with its legal basis and
until-date, and the history of transitions. Identifiers are never shown.

Example:
  lethe dsar show --tenant cleura --id 01J… -o json
`, stdout, stderr)
	id := o.idFlag()
	if code := o.start(args); code >= 0 {
		return code
	}
	defer o.done()
	resp, err := o.cl.dsar.GetRequest(o.ctx, &dsarv1.GetRequestRequest{TenantId: o.tenant, DsarId: *id})
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

func dsarExtend(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar extend", `
Usage: lethe dsar extend --tenant T --id DSAR_ID --months 1|2 --reason TEXT

Extends the statutory deadline (Art. 12(3)): once per request, within its
first month, by at most two months, with the reason the subject is told.
The tenant's SLA date does not move.

Example:
  lethe dsar extend --tenant clevio --id 01J… --months 2 --reason "complex request: 14 systems"
`, stdout, stderr)
	var reason string
	var months int
	id := o.idFlag()
	o.fs.IntVar(&months, "months", 0, "how many months more: 1 or 2 (required)")
	o.fs.StringVar(&reason, "reason", "", "why, as the subject is told (required)")
	requestID := o.requestIDFlag()
	if c := o.start(args, "months", "reason"); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.dsar.ExtendDeadline(o.ctx, &dsarv1.ExtendDeadlineRequest{RequestId: *requestID,
		TenantId: o.tenant, DsarId: *id, Months: int32(months), Reason: reason})
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

func dsarReject(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar reject", `
Usage: lethe dsar reject --tenant T --id DSAR_ID --reason REASON --detail TEXT

Refuses a request. Reasons: identity_not_verified (Art. 12(6)),
manifestly_unfounded, excessive (Art. 12(5)), exemption (name it in
--detail), no_data. The detail is what the subject is told.

Example:
  lethe dsar reject --tenant clio --id 01J… --reason excessive --detail "third identical request this month"
`, stdout, stderr)
	var reason, detail string
	id := o.idFlag()
	o.fs.StringVar(&reason, "reason", "", "why (required)")
	o.fs.StringVar(&detail, "detail", "", "the reason in words, naming the provision relied on (required)")
	requestID := o.requestIDFlag()
	if c := o.start(args, "reason", "detail"); c >= 0 {
		return c
	}
	defer o.done()
	r, err := enumFlag[dsarv1.RejectionReason]("reason", reason)
	if err != nil {
		return o.usage(err.Error())
	}
	resp, err := o.cl.dsar.RejectRequest(o.ctx, &dsarv1.RejectRequestRequest{RequestId: *requestID,
		TenantId: o.tenant, DsarId: *id, Reason: r, Detail: detail})
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

func dsarCancel(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar cancel", `
Usage: lethe dsar cancel --tenant T --id DSAR_ID

Cancels a request the subject withdrew. Its identifiers become
unrecoverable at once, as for every closed request.

Example:
  lethe dsar cancel --tenant cleura --id 01J…
`, stdout, stderr)
	id := o.idFlag()
	requestID := o.requestIDFlag()
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.dsar.CancelRequest(o.ctx, &dsarv1.CancelRequestRequest{RequestId: *requestID, TenantId: o.tenant, DsarId: *id})
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

// printRequest answers with a request: resp as JSON with -o json, its id
// with -o id, else the request as printRequest shows it.
func (o *opCmd) printRequest(r *dsarv1.Request, resp proto.Message) int {
	o.answer(resp, requestColumns.ids(r), func(w io.Writer) { printRequest(w, r) })
	return exitOK
}

func dsarVerify(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar verify", `
Usage: lethe dsar verify --tenant T --id DSAR_ID (--start | --code CODE | --attest login|manual --evidence REF)

Identity comes first: nothing fans out before it is verified.
  --start          send a one-time code through the tenant's channel
  --code CODE      the code the subject entered
  --attest KIND    a trusted caller confirms identity: "login" (the subject
                   was logged in) or "manual" (an operator checked);
                   --evidence names what it rests on (a session, a ticket)

Examples:
  lethe dsar verify --tenant clevenio --id 01J… --start
  lethe dsar verify --tenant clevenio --id 01J… --code 493021
  lethe dsar verify --tenant cleura --id 01J… --attest manual --evidence ticket-311
`, stdout, stderr)
	var code, attest, evidence string
	var startV bool
	id := o.idFlag()
	o.fs.BoolVar(&startV, "start", false, "send a one-time code")
	o.fs.StringVar(&code, "code", "", "the code the subject entered")
	o.fs.StringVar(&attest, "attest", "", "login or manual")
	o.fs.StringVar(&evidence, "evidence", "", "what the attestation rests on")
	requestID := o.requestIDFlag()
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	switch {
	case startV:
		resp, err := o.cl.dsar.StartVerification(o.ctx, &dsarv1.StartVerificationRequest{RequestId: *requestID, TenantId: o.tenant, DsarId: *id})
		if err != nil {
			return o.fail(err)
		}
		o.answer(resp, nil, func(w io.Writer) {
			fmt.Fprintf(w, "code sent by %s; expires %s; %d attempts\n", cell(resp.Method), cell(resp.ExpiresAt), resp.Attempts)
		})
	case code != "":
		resp, err := o.cl.dsar.VerifyIdentity(o.ctx, &dsarv1.VerifyIdentityRequest{RequestId: *requestID, TenantId: o.tenant, DsarId: *id, Code: code})
		if err != nil {
			return o.fail(err)
		}
		o.answer(resp, nil, func(w io.Writer) {
			if resp.Verified {
				printRequest(w, resp.Request)
			} else {
				fmt.Fprintf(w, "wrong code; %d attempts left\n", resp.AttemptsLeft)
			}
		})
		if !resp.Verified {
			return exitNo
		}
	case attest != "":
		method := map[string]commonv1.VerificationMethod{"login": commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION, "manual": commonv1.VerificationMethod_VERIFICATION_METHOD_MANUAL}[attest]
		if method == 0 {
			return o.usage("--attest is login or manual")
		}
		resp, err := o.cl.dsar.AttestIdentity(o.ctx, &dsarv1.AttestIdentityRequest{RequestId: *requestID, TenantId: o.tenant, DsarId: *id, Method: method, EvidenceReference: evidence})
		if err != nil {
			return o.fail(err)
		}
		o.printRequest(resp.Request, resp)
	default:
		return o.usage("give --start, --code or --attest")
	}
	return exitOK
}

func dsarCompleteTask(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar complete-task", `
Usage: lethe dsar complete-task --tenant T --id DSAR_ID --system S --outcome OUTCOME [flags]

Records what a system answered by hand did (a processor an operator wrote
to). Outcomes: erased, anonymised, rectified, not_found, retained, failed.
"retained" states what is kept, on which legal basis, until when — the
request then ends partially completed, and the subject is told why.

Examples:
  lethe dsar complete-task --tenant cleura --id 01J… --system portal --outcome erased
  lethe dsar complete-task --tenant cleura --id 01J… --system billing --outcome retained \
      --retain-categories user.financial --basis legal_obligation \
      --basis-detail "Swedish Accounting Act (1999:1078) ch. 7 § 2" --until 2033-12-31 \
      --exemption legal_obligation --law "Bokföringslagen (1999:1078) 7 kap. 2 §"
  lethe dsar complete-task --tenant clio --id 01J… --system survey-tool --outcome failed --reason "processor did not answer"
`, stdout, stderr)
	var system, outcome, retain, basis, detail, until, reason, exemption, law string
	id := o.idFlag()
	o.fs.StringVar(&system, "system", "", "the system answered for (required)")
	o.fs.StringVar(&outcome, "outcome", "", "what it did (required)")
	o.fs.StringVar(&retain, "retain-categories", "", "for retained: comma-separated categories kept")
	o.fs.StringVar(&basis, "basis", "legal_obligation", "for retained: the legal basis of keeping them")
	o.fs.StringVar(&detail, "basis-detail", "", "for retained: the obligation in words, as the subject is told")
	o.fs.StringVar(&until, "until", "", "for retained: until when (a date)")
	o.fs.StringVar(&exemption, "exemption", "", "for retained: the GDPR Art. 17(3) ground that allows keeping them: freedom_of_expression, legal_obligation, public_health, archiving_research_statistics or legal_claims")
	o.fs.StringVar(&law, "law", "", "for retained on legal_obligation: the law that requires keeping them, by act and section")
	o.fs.StringVar(&reason, "reason", "", "for failed: why")
	requestID := o.requestIDFlag()
	if c := o.start(args, "system", "outcome"); c >= 0 {
		return c
	}
	defer o.done()
	oc, err := enumFlag[eventsv1.OutcomeKind]("outcome", outcome)
	if err != nil {
		return o.usage(err.Error())
	}
	req := &dsarv1.CompleteTaskRequest{TenantId: o.tenant, DsarId: *id, SystemId: system, Outcome: oc, Reason: reason}
	if retain != "" || oc == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		lb, err := enumFlag[commonv1.LegalBasis]("basis", basis)
		if err != nil {
			return o.usage(err.Error())
		}
		u, err := tenantfile.ParseTime(until)
		if err != nil {
			return o.usage("--until: " + err.Error())
		}
		var ground eventsv1.ExemptionGround
		if exemption != "" {
			if ground, err = enumFlag[eventsv1.ExemptionGround]("exemption", exemption); err != nil {
				return o.usage(err.Error())
			}
		}
		req.Retained = []*eventsv1.Retention{{Categories: categories(retain), LegalBasis: lb, BasisDetail: detail, Until: timestamppb.New(u),
			Exemption: ground, Law: law}}
	}
	req.RequestId = *requestID
	resp, err := o.cl.dsar.CompleteTask(o.ctx, req)
	if err != nil {
		return o.fail(err)
	}
	return o.printRequest(resp.Request, resp)
}

func dsarExport(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar export", `
Usage: lethe dsar export --tenant T --id DSAR_ID [-out FILE]

Downloads the assembled access or portability package of a completed
request (JSON with a manifest; every record with its source), checked
against its SHA-256. Confirm delivery in the API (ConfirmDelivery) once the
subject has it: the package is destroyed then.

Example:
  lethe dsar export --tenant clevenio --id 01J… -out package.json
`, stdout, stderr)
	var out string
	id := o.idFlag()
	o.fs.StringVar(&out, "out", "", "file to write (default standard output)")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	stream, err := o.cl.dsar.DownloadPackage(o.ctx, &dsarv1.DownloadPackageRequest{TenantId: o.tenant, DsarId: *id})
	if err != nil {
		return o.fail(err)
	}
	var data []byte
	var info *dsarv1.PackageInfo
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return o.fail(err)
		}
		if chunk.Info != nil {
			info = chunk.Info
		}
		data = append(data, chunk.Chunk...)
	}
	if info != nil && int64(len(data)) != info.SizeBytes {
		fmt.Fprintf(stderr, "lethe dsar export: received %d bytes, the package has %d\n", len(data), info.SizeBytes)
		return exitPlatform
	}
	if out == "" {
		_, err = stdout.Write(data)
	} else {
		err = os.WriteFile(out, data, 0o600)
		fmt.Fprintf(stderr, "wrote %d bytes to %s\n", len(data), out)
	}
	if err != nil {
		fmt.Fprintln(stderr, "lethe dsar export:", err)
		return exitUsage
	}
	return exitOK
}

func dsarReceipt(args []string, stdout, stderr io.Writer) int {
	o := newOp("dsar receipt", `
Usage: lethe dsar receipt --tenant T --id DSAR_ID

The completion receipt of a closed request: every system's outcome and
time, and the receipt's place on the hash-chained receipt log.
`, stdout, stderr)
	id := o.idFlag()
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.dsar.GetReceipt(o.ctx, &dsarv1.GetReceiptRequest{TenantId: o.tenant, DsarId: *id})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		r := resp.Receipt
		fmt.Fprintf(w, "receipt %d of %s (%s, %s), hash %x\n", r.Sequence, r.DsarId, cell(r.Type), cell(r.State), r.Hash)
		t := newTable(w, "SYSTEM", "OUTCOME", "ANSWERED", "HELD")
		for _, e := range r.Entries {
			t.row(e.SystemId, e.Outcome, e.AnsweredAt, e.Held)
		}
		t.flush()
	})
	return exitOK
}
