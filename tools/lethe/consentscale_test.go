package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/consent/consenttest"
)

var (
	consentScaleSubjects = flag.Int("consentscale.subjects", 1_000_000, "subjects of BenchmarkConsentAtScale, five purposes each")
	consentScaleDir      = flag.String("consentscale.dir", "", "folder of BenchmarkConsentAtScale's consent.db, generated when absent and kept between runs; a temporary one when empty")
)

// BenchmarkConsentAtScale: the consent deployable's memory and time from
// exec to serving on a store of -consentscale.subjects subjects with five
// purposes each (consenttest.Generate writes it straight into consent.db),
// first reading every record (no index snapshot), then from the snapshot
// its clean stop wrote, then from that snapshot with the files' pages
// dropped from the page cache. Serving is health SERVING, which the
// service reports only once its decision index is built; every start must
// answer a sample of Checks as the first did. Run it by itself, without
// -race:
//
//	cd tools && go test -run '^$' -bench ConsentAtScale -benchtime 1x -timeout 2h ./lethe/ -consentscale.subjects=2000000
func BenchmarkConsentAtScale(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector inflates memory; run without -race")
	}
	dir := *consentScaleDir
	if dir == "" {
		dir = b.TempDir()
	}
	n := *consentScaleSubjects
	const tenant = "retail"
	dbPath := filepath.Join(dir, "consent.db")
	if _, err := os.Stat(dbPath); err != nil {
		started := time.Now()
		res, err := consenttest.Generate(dbPath, consenttest.Spec{Tenant: tenant, Country: "DE", Subjects: n, Now: time.Now(), Seed: 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("generated %d subjects (%d records, %d objections, %d restrictions, revision %d) in %s",
			n, res.Records, res.Objections, res.Restrictions, res.Revision, time.Since(started).Round(time.Second))
	}
	b.Logf("files: %s", fileSizes(dir))
	pkg := "github.com/lethe-privacy/lethe/services/consent/cmd/lethe-consent"
	bin := buildBinaries(b, pkg)[pkg]
	nats := brokertest.Start(b)
	d := &deployable{name: "consent", health: consent.ServiceName, bin: bin, data: dir, addr: freeAddr(b), hAddr: freeAddr(b)}
	d.args = []string{"--addr", d.addr, "--health-addr", d.hAddr, "--data", dir, "--nats-url", nats.ClientURL(),
		"--registry-addr", freeAddr(b), "--metrics-addr", "", "--drain-delay", "0s", "--log-level", "info"}
	probe := func(ctx context.Context, conn *grpc.ClientConn) (string, error) {
		client := consentv1.NewConsentServiceClient(conn)
		req := &consentv1.CheckBatchRequest{TenantId: tenant}
		for i := 0; i < n; i += max(1, n/20) {
			for _, p := range consenttest.Purposes {
				req.Items = append(req.Items, &consentv1.CheckBatchItem{SubjectId: consenttest.SubjectID(i), PurposeId: p.PurposeId})
			}
		}
		resp, err := client.CheckBatch(ctx, req)
		if err != nil {
			return "", err
		}
		var out []string
		for _, d := range resp.Decisions {
			out = append(out, fmt.Sprintf("%s/%s:%v:%s:%s", d.SubjectId, d.PurposeId, d.Allowed, d.Reason, d.BasisId))
		}
		return strings.Join(out, " "), nil
	}
	loaded := regexp.MustCompile(`decision index loaded.*`)

	b.Logf("| start | SERVING | RSS | anon RSS | file RSS | peak RSS | index load (log) |")
	b.Logf("|---|---:|---:|---:|---:|---:|---|")
	var baseline string
	for b.Loop() {
		_ = os.Remove(filepath.Join(dir, "consent.index"))
		for i, kind := range []string{"every record", "snapshot", "snapshot, pages dropped"} {
			if kind == "snapshot, pages dropped" {
				dropPageCache(b, dir)
			}
			m := measureStart(b, d)
			pid := d.proc.cmd.Process.Pid
			rss, file := statusKiB(b, pid, "VmRSS"), statusKiB(b, pid, "RssFile")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			conn, err := dialTest(d.addr)
			if err != nil {
				b.Fatal(err)
			}
			answer, err := probe(ctx, conn)
			cancel()
			_ = conn.Close()
			if err != nil {
				b.Fatal(err)
			}
			if i == 0 {
				baseline = answer
			} else if answer != baseline {
				b.Fatalf("after a start from %s the sample answers\n  %s\nnot\n  %s", kind, answer, baseline)
			}
			b.Logf("| %s | %s | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %s |", kind, ms2(m.serving), float64(rss)/1024,
				float64(m.anonRSS)/1024, float64(file)/1024, float64(m.peakRSS)/1024, loaded.FindString(d.proc.output.String()))
			stopped := time.Now()
			d.proc.stop(b)
			b.Logf("clean stop, snapshot written: %s; files: %s", time.Since(stopped).Round(time.Millisecond), fileSizes(dir))
		}
	}
}
