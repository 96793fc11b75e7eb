package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

const consentHelp = `
Usage: lethe consent <command> [flags]

Commands:
  check       may a subject's data be processed for a purpose, and why
              (exit 0 allowed, 1 denied)
  grant       record a consent
  withdraw    record a withdrawal; systems that process for the purpose
              are told (consent.withdrawn) and answer
  history     a subject's consent records, oldest first (Art. 7(1) proof)
  fanout      how a withdrawal, objection or restriction reached each system
  complete-task record an operator's answer for a system that answers by hand
  accept-recovery-gap
              let a writer restored from a backup older than the event
              stream reaches answer Check again, accepting the loss

Examples:
  lethe consent check --tenant clio --subject s-42 --purpose cookies.marketing --role student
  lethe consent grant --tenant clio --subject s-42 --purpose newsletter
  lethe consent withdraw --tenant clio --subject s-42 --purpose newsletter --method email_link
  lethe consent fanout --tenant clio --record <record id>
  lethe consent complete-task --tenant clio --record <record id> --system newsletter-sender --outcome applied

Consent shards: where each shard has its own writer, give the consent
address as a template, --consent-addr 'lethe-consent-{shard}:7401' (or
consent: in the context, docs/cli.md): each command asks the registry for
its tenant's shard and calls that writer.
`

// consentCommands are the subcommands of "lethe consent"; the usage text lists each.
var consentCommands = map[string]func([]string, io.Writer, io.Writer) int{
	"check":               consentCheck,
	"grant":               func(a []string, o, e io.Writer) int { return consentRecord("grant", a, o, e) },
	"withdraw":            func(a []string, o, e io.Writer) int { return consentRecord("withdraw", a, o, e) },
	"history":             consentHistory,
	"fanout":              consentFanout,
	"complete-task":       consentCompleteTask,
	"accept-recovery-gap": consentAcceptRecoveryGap,
}

func runConsent(args []string, stdout, stderr io.Writer) int {
	return subcommand("consent", consentHelp, consentCommands, args, stdout, stderr)
}

func consentCheck(args []string, stdout, stderr io.Writer) int {
	o := newOp("consent check", `
Usage: lethe consent check --tenant T --subject S --purpose P [flags]

Asks the consent service's Check: allowed or not, and the reason
(granted, withdrawn, ineligible_role, under_age, objected, …) with the
record it rests on. Attributes the eligibility rules read are given as
flags; Lethe does not store them.

Examples:
  lethe consent check --tenant clio --subject s-42 --purpose cookies.marketing --role student
  lethe consent check --tenant clevio --subject s-7 --purpose marketing.email --age 14 --country DE

Exit codes: 0 allowed, 1 denied, 2 usage, 3 refused, 4 platform failure.
`, stdout, stderr)
	var subject, purpose, role, country string
	var age int
	var gpc bool
	o.fs.StringVar(&subject, "subject", "", "the subject's pseudonymous id (required)")
	o.fs.StringVar(&purpose, "purpose", "", "the purpose (required)")
	o.fs.StringVar(&role, "role", "", "the subject's role (student, teacher, …)")
	o.fs.IntVar(&age, "age", 0, "the subject's age in years")
	o.fs.StringVar(&country, "country", "", "the subject's country, ISO 3166-1 alpha-2, for the age of digital consent")
	o.fs.BoolVar(&gpc, "gpc", false, "a Global Privacy Control signal accompanies the request")
	if code := o.start(args, "subject", "purpose"); code >= 0 {
		return code
	}
	defer o.done()
	resp, err := o.cl.consent.Check(o.ctx, &consentv1.CheckRequest{TenantId: o.tenant, SubjectId: subject, PurposeId: purpose,
		Attributes: &consentv1.SubjectAttributes{Role: role, Age: int32(age), Country: country, Gpc: gpc}})
	if err != nil {
		return o.fail(err)
	}
	d := resp.Decision
	o.answer(resp, nil, func(w io.Writer) {
		t := newTable(w, "SUBJECT", "PURPOSE", "DECISION", "REASON", "BASIS")
		t.row(d.SubjectId, d.PurposeId, map[bool]string{true: "allowed", false: "denied"}[d.Allowed], d.Reason, d.BasisId)
		t.flush()
	})
	if !d.Allowed {
		return exitNo
	}
	return exitOK
}

func consentRecord(action string, args []string, stdout, stderr io.Writer) int {
	o := newOp("consent "+action, fmt.Sprintf(`
Usage: lethe consent %[1]s --tenant T --subject S --purpose P [flags]

Records one %[1]s of consent to one purpose, under the purpose's current
notice version unless --notice-version names another. A withdrawal is
published as consent.withdrawn to every system that processes for the
purpose; follow it with "lethe consent fanout --record ID".

Examples:
  lethe consent %[1]s --tenant clio --subject s-42 --purpose newsletter
  lethe consent %[1]s --tenant clio --subject s-42 --purpose newsletter --method email_link --request-id unsub-981
  RECORD=$(lethe consent %[1]s --tenant clio --subject s-42 --purpose newsletter -o id)
`, action), stdout, stderr)
	var subject, purpose, method, notice string
	o.fs.StringVar(&subject, "subject", "", "the subject's pseudonymous id (required)")
	o.fs.StringVar(&purpose, "purpose", "", "the purpose (required)")
	o.fs.StringVar(&method, "method", "api", "how it was collected: "+strings.Join(tenantfile.EnumNames(consentv1.CollectionMethod(0).Descriptor()), ", "))
	o.fs.StringVar(&notice, "notice-version", "", "the notice version shown (default the purpose's current one)")
	requestID := o.requestIDFlag()
	o.idOutputFlag("record id")
	if code := o.start(args, "subject", "purpose"); code >= 0 {
		return code
	}
	defer o.done()
	m, err := enumFlag[consentv1.CollectionMethod]("method", method)
	if err != nil {
		return o.usage(err.Error())
	}
	act := consentv1.ConsentAction_CONSENT_ACTION_GRANT
	if action == "withdraw" {
		act = consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW
	}
	resp, err := o.cl.consent.RecordConsent(o.ctx, &consentv1.RecordConsentRequest{RequestId: *requestID, TenantId: o.tenant, SubjectId: subject,
		PurposeId: purpose, Action: act, Method: m, NoticeVersion: notice})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, recordColumns.ids(resp.Record), func(w io.Writer) {
		recordColumns.print(w, resp.Record)
		fmt.Fprintf(w, "request id %s\n", *requestID)
	})
	return exitOK
}

// recordColumns show consent records.
var recordColumns = columns[*consentv1.ConsentRecord]{
	header: []string{"RECORD", "PURPOSE", "ACTION", "NOTICE", "METHOD", "RECORDED", "EXPIRES"},
	row: func(r *consentv1.ConsentRecord) []any {
		return []any{r.RecordId, r.PurposeId, r.Action, r.NoticeVersion, r.Method, r.RecordedAt, r.ExpiresAt}
	},
	id: (*consentv1.ConsentRecord).GetRecordId,
}

// taskColumns show each system's task of a limit.
var taskColumns = columns[*consentv1.Task]{
	header: []string{"SYSTEM", "STATE", "OUTCOME", "REASON"},
	row:    func(t *consentv1.Task) []any { return []any{t.SystemId, t.State, t.Outcome, t.Reason} },
}

func consentHistory(args []string, stdout, stderr io.Writer) int {
	o := newOp("consent history", `
Usage: lethe consent history --tenant T --subject S

Lists a subject's consent records, oldest first: the append-only proof
that consent was given (Art. 7(1)), with the notice version and expiry.

Example:
  lethe consent history --tenant clio --subject s-42 -o json
`, stdout, stderr)
	var subject string
	o.fs.StringVar(&subject, "subject", "", "the subject's pseudonymous id (required)")
	o.idOutputFlag("record ids")
	if code := o.start(args, "subject"); code >= 0 {
		return code
	}
	defer o.done()
	all, err := listAll(func(size int32, token string) (*consentv1.ListConsentHistoryResponse, error) {
		return o.cl.consent.ListConsentHistory(o.ctx, &consentv1.ListConsentHistoryRequest{TenantId: o.tenant, SubjectId: subject, PageSize: size, PageToken: token})
	})
	if err != nil {
		return o.fail(err)
	}
	return listed(o, all, all.Records, recordColumns)
}

func consentFanout(args []string, stdout, stderr io.Writer) int {
	o := newOp("consent fanout", `
Usage: lethe consent fanout --tenant T (--record ID | --objection ID | --restriction ID)

Shows how a limit reached the systems that must honour it: each system's
task and answer. Complete when every task is final.

Example:
  lethe consent fanout --tenant clio --record 01J…
`, stdout, stderr)
	limit := limitFlags(o)
	if code := o.start(args); code >= 0 {
		return code
	}
	defer o.done()
	cause, err := limit.cause()
	if err != nil {
		return o.usage(err.Error())
	}
	resp, err := o.cl.consent.GetFanout(o.ctx, &consentv1.GetFanoutRequest{TenantId: o.tenant, Cause: cause})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		taskColumns.print(w, resp.Tasks...)
		fmt.Fprintf(w, "complete: %s\n", cell(resp.Complete))
	})
	return exitOK
}

func consentCompleteTask(args []string, stdout, stderr io.Writer) int {
	o := newOp("consent complete-task", `
Usage: lethe consent complete-task --tenant T (--record ID | --objection ID | --restriction ID) --system S --outcome OUTCOME [--reason TEXT]

Records what a system answered by hand did about a limit (a processor an
operator wrote to). Outcomes: applied (it honours the limit now),
not_applicable, failed (with --reason). Systems on the SDK answer
themselves and are refused.

Examples:
  lethe consent complete-task --tenant clio --record 01J… --system newsletter-sender --outcome applied
  lethe consent complete-task --tenant clio --objection 01J… --system survey-tool --outcome failed --reason "processor did not answer"
`, stdout, stderr)
	limit := limitFlags(o)
	var system, outcome, reason string
	o.fs.StringVar(&system, "system", "", "the system answered for (required)")
	o.fs.StringVar(&outcome, "outcome", "", "applied, not_applicable or failed (required)")
	o.fs.StringVar(&reason, "reason", "", "why (required for failed)")
	requestID := o.requestIDFlag()
	if code := o.start(args, "system", "outcome"); code >= 0 {
		return code
	}
	defer o.done()
	cause, err := limit.cause()
	if err != nil {
		return o.usage(err.Error())
	}
	oc, err := enumFlag[eventsv1.OutcomeKind]("outcome", outcome)
	if err != nil {
		return o.usage(err.Error())
	}
	resp, err := o.cl.consent.CompleteTask(o.ctx, &consentv1.CompleteTaskRequest{RequestId: *requestID, TenantId: o.tenant,
		Cause: cause, SystemId: system, Outcome: oc, Reason: reason})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) { taskColumns.print(w, resp.Task) })
	return exitOK
}

func consentAcceptRecoveryGap(args []string, stdout, stderr io.Writer) int {
	o := newPlatformOp("consent accept-recovery-gap", `
Usage: lethe consent accept-recovery-gap --reason TEXT [--shard S]

A consent writer whose store was restored from a backup older than the
event stream reaches may lack withdrawals, objections, restrictions and
lifts recorded in the gap, and refuses Check and CheckBatch
(RECOVERY_INCOMPLETE) until its store is restored from a newer backup or
an operator accepts the loss. Accept only after the systems that process
for its tenants have re-applied what the gap may have held: Check then
answers from what the store holds. The reason is kept in the store with
the gap and the caller, and the call is audited. Refused when no gap
stands.

The writer is the consent address's; where that address is a template
with {shard} in it, --shard names the shard whose writer accepts.

Example:
  lethe consent accept-recovery-gap --reason "incident 7: unsubscribes of 3-9 May re-applied by the CRM and newsletter owners"
`, stdout, stderr)
	var reason, shard string
	o.fs.StringVar(&reason, "reason", "", "why the loss is accepted and what was done about it (required)")
	o.fs.StringVar(&shard, "shard", "s0", "the consent shard whose writer accepts, when the consent address is a template")
	requestID := o.requestIDFlag()
	if code := o.start(args, "reason"); code >= 0 {
		return code
	}
	defer o.done()
	consent, err := o.cl.consentShard(shard)
	if err != nil {
		return o.usage("--shard: " + err.Error())
	}
	resp, err := consent.AcceptRecoveryGap(o.ctx, &consentv1.AcceptRecoveryGapRequest{RequestId: *requestID, Reason: reason})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		from := "never complete (a new, empty store)"
		if resp.GapFrom != nil {
			from = cell(resp.GapFrom)
		}
		fmt.Fprintf(w, "gap accepted: from %s until %s; Check answers again\n", from, cell(resp.GapUntil))
	})
	return exitOK
}

// limit names a withdrawal, objection or restriction by its flags.
type limit struct{ record, objection, restriction string }

func limitFlags(o *opCmd) *limit {
	l := &limit{}
	o.fs.StringVar(&l.record, "record", "", "a consent record (a withdrawal)")
	o.fs.StringVar(&l.objection, "objection", "", "an objection")
	o.fs.StringVar(&l.restriction, "restriction", "", "a restriction")
	return l
}

// cause is the limit as the consent service names causes.
func (l *limit) cause() (*commonv1.Cause, error) {
	switch {
	case l.record != "":
		return &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: l.record}, nil
	case l.objection != "":
		return &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_OBJECTION, Id: l.objection}, nil
	case l.restriction != "":
		return &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_RESTRICTION, Id: l.restriction}, nil
	}
	return nil, errors.New("name the limit with --record, --objection or --restriction")
}
