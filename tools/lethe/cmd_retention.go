package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

const retentionHelp = `
Usage: lethe retention <command> [flags]

Commands:
  preview   what the rules would purge between now and a date
  holds     the legal holds in force (or all, with --all)
  explain   when each category of a subject's data will be purged, and why
  report    per rule: directives, and what systems answered

Examples:
  lethe retention preview --tenant clicklearn --within P1Y
  lethe retention holds --tenant cleura --all
  lethe retention explain --tenant clicklearn --subject u-1
`

// retentionCommands are the subcommands of "lethe retention"; the usage text lists each.
var retentionCommands = map[string]func([]string, io.Writer, io.Writer) int{
	"preview": retentionPreview,
	"holds":   retentionHolds,
	"explain": retentionExplain,
	"report":  retentionReport,
}

func runRetention(args []string, stdout, stderr io.Writer) int {
	return subcommand("retention", retentionHelp, retentionCommands, args, stdout, stderr)
}

func retentionPreview(args []string, stdout, stderr io.Writer) int {
	o := newOp("retention preview", `
Usage: lethe retention preview --tenant T (--within PERIOD | --until DATE) [--sample N]

Shows, per rule, how many subjects and items would be purged (and how many
a hold keeps) between now and the end of the window. Nothing is purged.

Examples:
  lethe retention preview --tenant clicklearn --within P1Y --sample 5
  lethe retention preview --tenant cleura --until 2031-01-01 -o json
`, stdout, stderr)
	var within, until string
	var sample int
	o.fs.StringVar(&within, "within", "P1Y", "the window, an ISO 8601 period from now")
	o.fs.StringVar(&until, "until", "", "the window's end, a date (instead of --within)")
	o.fs.IntVar(&sample, "sample", 0, "example subjects per rule (at most 100)")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	end := time.Now()
	if until != "" {
		t, err := tenantfile.ParseTime(until)
		if err != nil {
			return o.usage("--until: " + err.Error())
		}
		end = t
	} else {
		p, err := period.Parse(within)
		if err != nil {
			return o.usage("--within: " + err.Error())
		}
		end = p.AddTo(end)
	}
	resp, err := o.cl.retention.PreviewPurges(o.ctx, &retentionv1.PreviewPurgesRequest{TenantId: o.tenant, Until: timestamppb.New(end), SampleSize: int32(sample)})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		t := newTable(w, "RULE", "ACTION", "SUBJECTS", "ITEMS", "HELD", "FIRST PURGE", "SAMPLE")
		for _, r := range resp.Rules {
			t.row(r.RuleId, r.Action, r.Subjects, r.Items, r.Held, r.FirstPurgeAt, strings.Join(r.SampleSubjectIds, ","))
		}
		t.flush()
		fmt.Fprintf(w, "%d subjects evaluated, window until %s\n", resp.SubjectsEvaluated, end.UTC().Format(time.RFC3339))
	})
	return exitOK
}

func retentionHolds(args []string, stdout, stderr io.Writer) int {
	o := newOp("retention holds", `
Usage: lethe retention holds --tenant T [--subject S] [--all]

Lists the legal holds in force: held data is never purged. --subject
lists those that apply to one subject; --all includes released and lapsed
holds. Holds are declared in tenant files (retention.holds) or placed
through the API (PlaceHold).
`, stdout, stderr)
	var subject string
	var all bool
	o.fs.StringVar(&subject, "subject", "", "only holds that apply to this subject")
	o.fs.BoolVar(&all, "all", false, "include released and lapsed holds")
	o.idOutputFlag("hold ids")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	out, err := listAll(func(size int32, token string) (*retentionv1.ListHoldsResponse, error) {
		return o.cl.retention.ListHolds(o.ctx, &retentionv1.ListHoldsRequest{TenantId: o.tenant, SubjectId: subject, IncludeEnded: all, PageSize: size, PageToken: token})
	})
	if err != nil {
		return o.fail(err)
	}
	return listed(o, out, out.Holds, holdColumns)
}

// holdColumns show legal holds.
var holdColumns = columns[*retentionv1.Hold]{
	header: []string{"HOLD", "SUBJECT", "CATEGORY", "FROM", "UNTIL", "RELEASED", "REASON"},
	row: func(h *retentionv1.Hold) []any {
		return []any{h.HoldId, h.SubjectId, h.GetCategory().GetId(), h.StartTime, h.EndTime, h.ReleasedAt, h.Reason}
	},
	id: (*retentionv1.Hold).GetHoldId,
}

func retentionExplain(args []string, stdout, stderr io.Writer) int {
	o := newOp("retention explain", `
Usage: lethe retention explain --tenant T --subject S

Says, per category Lethe tracks for the subject, when it will be purged
and why: the rules, triggers, minimums and holds that decided it.
`, stdout, stderr)
	var subject string
	o.fs.StringVar(&subject, "subject", "", "the subject (required)")
	if c := o.start(args, "subject"); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.retention.ExplainSubject(o.ctx, &retentionv1.ExplainSubjectRequest{TenantId: o.tenant, SubjectId: subject})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		for _, v := range resp.Verdicts {
			if v.RetainedBy != "" {
				fmt.Fprintf(w, "%s: purge %s (%s, retained by %s)\n", v.GetCategory().GetId(), cell(v.PurgeAt), cell(v.Action), v.RetainedBy)
			} else {
				fmt.Fprintf(w, "%s: purge %s (%s, rule %s)\n", v.GetCategory().GetId(), cell(v.PurgeAt), cell(v.Action), cell(v.RuleId))
			}
			for _, line := range v.Explanation {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
	})
	return exitOK
}

func retentionReport(args []string, stdout, stderr io.Writer) int {
	o := newOp("retention report", `
Usage: lethe retention report --tenant T [--rule R]

Counts per rule the directives issued and what systems answered.
`, stdout, stderr)
	var rule string
	o.fs.StringVar(&rule, "rule", "", "one rule (default all)")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.retention.GetRuleReport(o.ctx, &retentionv1.GetRuleReportRequest{TenantId: o.tenant, RuleId: rule})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		t := newTable(w, "RULE", "DIRECTIVES", "PURGED", "ANONYMISED", "RETAINED", "NOT FOUND", "FAILED", "PENDING", "HELD")
		for _, r := range resp.Rules {
			t.row(r.RuleId, r.Directives, r.Purged, r.Anonymised, r.Retained, r.NotFound, r.Failed, r.Pending, r.Held)
		}
		t.flush()
	})
	return exitOK
}
