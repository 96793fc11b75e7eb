package main

import (
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

const registryHelp = `
Usage: lethe registry <command> [flags]

Commands:
  findings     transfers outside the EU/EEA that are not lawful, most severe
               first (exit 1 when there are critical ones)
  ropa         the records of processing activities (Art. 30)
  disclosures  which categories went to which recipients during a period
  tenants      every tenant

Examples:
  lethe registry findings --tenant clicklearn
  lethe registry ropa --tenant clicklearn --format markdown > ropa.md
  lethe registry disclosures --tenant clevio --since P12M
`

// registryCommands are the subcommands of "lethe registry"; the usage text lists each.
var registryCommands = map[string]func([]string, io.Writer, io.Writer) int{
	"findings":    registryFindings,
	"ropa":        registryRopa,
	"disclosures": registryDisclosures,
	"tenants":     registryTenants,
}

func runRegistry(args []string, stdout, stderr io.Writer) int {
	return subcommand("registry", registryHelp, registryCommands, args, stdout, stderr)
}

func registryFindings(args []string, stdout, stderr io.Writer) int {
	o := newOp("registry findings", `
Usage: lethe registry findings --tenant T

Checks every current transfer outside the EU/EEA against the legal facts
Lethe holds (adequacy decisions, SCC versions, the EU-US frameworks).

Exit codes: 0 no critical finding, 1 at least one critical finding.
`, stdout, stderr)
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	resp, err := o.cl.registry.ListTransferFindings(o.ctx, &registryv1.ListTransferFindingsRequest{TenantId: o.tenant})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		t := newTable(w, "SYSTEM", "SEVERITY", "CODE", "MESSAGE")
		for _, f := range resp.Findings {
			t.row(f.SystemId, f.Severity, f.Code, f.Message)
		}
		t.flush()
	})
	for _, f := range resp.Findings {
		if f.Severity == registryv1.Severity_SEVERITY_CRITICAL {
			return exitNo
		}
	}
	return exitOK
}

func registryRopa(args []string, stdout, stderr io.Writer) int {
	o := newOp("registry ropa", `
Usage: lethe registry ropa --tenant T [--format markdown|csv|json]

Renders the records of processing activities with everything Art. 30(1)
lists.
`, stdout, stderr)
	var format string
	o.fs.StringVar(&format, "format", "markdown", "markdown, csv or json")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	f, err := enumFlag[registryv1.ExportFormat]("format", format)
	if err != nil {
		return o.usage(err.Error())
	}
	resp, err := o.cl.registry.ExportRecordsOfProcessing(o.ctx, &registryv1.ExportRecordsOfProcessingRequest{TenantId: o.tenant, Format: f})
	if err != nil {
		return o.fail(err)
	}
	_, _ = stdout.Write(resp.Content)
	return exitOK
}

func registryDisclosures(args []string, stdout, stderr io.Writer) int {
	o := newOp("registry disclosures", `
Usage: lethe registry disclosures --tenant T [--since PERIOD|DATE]

Which categories of the tenant's data went to which recipients during the
period (every system but the tenant's internal ones), from the systems'
history: "over the past 12 months we disclosed …".
`, stdout, stderr)
	var since string
	o.fs.StringVar(&since, "since", "P12M", "start of the period: an ISO 8601 period back from now, or a date")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	from, err := tenantfile.ParseTime(since)
	if err != nil {
		p, perr := period.Parse(since)
		if perr != nil {
			return o.usage("--since is a period (P12M) or a date")
		}
		from = subtract(time.Now(), p)
	}
	resp, err := o.cl.registry.ListDisclosures(o.ctx, &registryv1.ListDisclosuresRequest{TenantId: o.tenant, From: timestamppb.New(from)})
	if err != nil {
		return o.fail(err)
	}
	o.answer(resp, nil, func(w io.Writer) {
		t := newTable(w, "RECIPIENT", "NAME", "KIND", "COUNTRY", "CATEGORIES")
		for _, d := range resp.Disclosures {
			t.row(d.SystemId, d.Name, d.Kind, d.Country, d.Categories)
		}
		t.flush()
	})
	return exitOK
}

// subtract goes back p from t (calendar parts by AddDate, which is exact
// enough for a reporting window).
func subtract(t time.Time, p period.Period) time.Time {
	return t.AddDate(-p.Years, -p.Months, -(p.Weeks*7 + p.Days)).Add(-p.Time)
}

func registryTenants(args []string, stdout, stderr io.Writer) int {
	o := newOp("registry tenants", `
Usage: lethe registry tenants

Lists every tenant.
`, stdout, stderr)
	o.tenant = "*"
	o.idOutputFlag("tenant ids")
	if c := o.start(args); c >= 0 {
		return c
	}
	defer o.done()
	all, err := listAll(func(size int32, token string) (*registryv1.ListTenantsResponse, error) {
		return o.cl.registry.ListTenants(o.ctx, &registryv1.ListTenantsRequest{PageSize: size, PageToken: token})
	})
	if err != nil {
		return o.fail(err)
	}
	return listed(o, all, all.Tenants, tenantColumns)
}

// tenantColumns show tenants.
var tenantColumns = columns[*registryv1.Tenant]{
	header: []string{"TENANT", "NAME", "COUNTRY", "DSAR SLA", "CONSENT SHARD", "CREATED"},
	row: func(tn *registryv1.Tenant) []any {
		sla := ""
		if d := tn.GetSettings().GetDsarSla(); d != nil {
			sla = tenantfile.FormatDuration(d.AsDuration())
		}
		return []any{tn.TenantId, tn.DisplayName, tn.GetSettings().GetCountry(), sla, tn.ConsentShard, tn.CreatedAt}
	},
	id: (*registryv1.Tenant).GetTenantId,
}
