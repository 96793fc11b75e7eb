package dsar_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/services/dsar"
)

// TestSubmissionLargerThanOneWrite: a submission of more bytes than one
// write batch (dsar.SubmitBatch) is written in several transactions, and the
// package holds every record once, in the order sent, with the response
// counting them all. Art. 15(3) GDPR: the copy is of all the data.
func TestSubmissionLargerThanOneWrite(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", nil)
	f.system(t, "clio", "archive", manual, nil, "user.financial")
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Access: &dsarv1.AccessDetails{}})
	f.attest(t, "clio", r.DsarId)

	// 40 records of 40 KiB: about 1.6 MiB sealed, past one batch.
	const n, size = 40, 40 << 10
	var recs []*dsarv1.SubmittedRecord
	var total int64
	for i := range n {
		value := fmt.Sprintf(`"%04d%s"`, i, strings.Repeat("x", size))
		total += int64(len(value))
		recs = append(recs, record("user.financial.invoice", commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, "invoicing", value))
	}
	if total <= dsar.SubmitBatch {
		t.Fatalf("the submission (%d bytes) does not exceed one batch (%d)", total, dsar.SubmitBatch)
	}
	resp := f.submit(t, "clio", r.DsarId, "archive", recs...)
	if resp.Records != n || resp.Bytes != total {
		t.Fatalf("SubmitData = %d records, %d bytes; want %d, %d", resp.Records, resp.Bytes, n, total)
	}

	f.waitState(t, "clio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	body, _ := f.download(t, "clio", r.DsarId)
	var p pkg
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("package is not JSON: %v", err)
	}
	got := p.Data["archive"]
	if len(got) != n {
		t.Fatalf("package holds %d records of the archive, want %d", len(got), n)
	}
	for i, rec := range got {
		var s string
		if err := json.Unmarshal(rec.Value, &s); err != nil || !strings.HasPrefix(s, fmt.Sprintf("%04d", i)) || len(s) != 4+size {
			t.Fatalf("record %d of the package is not the %dth sent (%.12q…, %d bytes)", i, i, s, len(s))
		}
	}
}
