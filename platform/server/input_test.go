package server_test

import (
	"bytes"
	"context"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lethe-privacy/lethe/platform/apierror"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
)

// rawCodec sends and receives bytes as they are, so a test can put on the
// wire what no well-behaved client would.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// echoRaw calls Echo with raw request bytes and decodes the answer.
func (f *fixture) echoRaw(t *testing.T, req []byte) (*kittestv1.EchoResponse, error) {
	t.Helper()
	var out []byte
	if err := f.conn.Invoke(context.Background(), kittestv1.KitTestService_Echo_FullMethodName, req, &out, grpc.ForceCodecV2(rawCodec{})); err != nil {
		return nil, err
	}
	resp := &kittestv1.EchoResponse{}
	if err := proto.Unmarshal(out, resp); err != nil {
		t.Fatalf("decode the echo: %v", err)
	}
	return resp, nil
}

func field(num protowire.Number, value []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Malformed requests are the caller's mistake: grpc-go alone answers them
// Internal, which pages the operator.
func TestMalformedRequestsAreInvalidArgument(t *testing.T) {
	f := start(t, server.Config{})
	badUTF8 := []byte("caf\xc3\x28")
	deepGroups := bytes.Repeat(protowire.AppendTag(nil, 99, protowire.StartGroupType), 20000)
	for _, tc := range []struct {
		name  string
		req   []byte
		field string
	}{
		{"invalid UTF-8 in a string", field(1, badUTF8), "text"},
		{"invalid UTF-8 in a repeated nested message", slices.Concat(
			field(3, field(1, []byte("ok"))),
			field(3, field(1, badUTF8))), "schedules[1].label"},
		{"a length past the end", slices.Concat(protowire.AppendTag(nil, 2, protowire.BytesType), []byte{0x7f, 0x01}), "schedule"},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ""},
		{"groups nested past the recursion limit", deepGroups, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.echoRaw(t, tc.req)
			if code(err) != codes.InvalidArgument {
				t.Fatalf("Echo = %v, want InvalidArgument", err)
			}
			if fields := violatedFields(t, err); len(fields) != 1 || fields[0] != tc.field {
				t.Fatalf("violations name %q, want %q", fields, tc.field)
			}
		})
	}
	// The refused calls left the server as it was: the next call works.
	if resp, err := f.client.Echo(context.Background(), &kittestv1.EchoRequest{Text: "after"}); err != nil || resp.Received.Text != "after" {
		t.Fatalf("Echo after the malformed calls = %v, %v", resp, err)
	}
}

// An unknown field has passed no validation rule; storing it would bypass
// every length bound.
func TestUnknownFieldsAreDiscarded(t *testing.T) {
	f := start(t, server.Config{})
	known := marshal(t, &kittestv1.EchoRequest{Text: "kept", Schedule: &kittestv1.Schedule{Label: "nested"}})
	big := field(999, bytes.Repeat([]byte("x"), 3<<20))
	nestedUnknown := field(2, field(77, []byte("inside")))
	resp, err := f.echoRaw(t, slices.Concat(known, big, nestedUnknown))
	if err != nil {
		t.Fatalf("Echo with unknown fields: %v", err)
	}
	if resp.Received.Text != "kept" || resp.Received.Schedule.GetLabel() != "nested" {
		t.Fatalf("known fields = %v, want them kept", resp.Received)
	}
	if n := len(resp.Received.ProtoReflect().GetUnknown()) + len(resp.Received.Schedule.ProtoReflect().GetUnknown()); n != 0 {
		t.Fatalf("the handler received %d bytes of unknown fields, want none", n)
	}
}

func TestTimesAndDurationsOutsideTheWindow(t *testing.T) {
	f := start(t, server.Config{})
	ts := func(s int64, n int32) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: s, Nanos: n} }
	dur := func(s int64, n int32) *durationpb.Duration { return &durationpb.Duration{Seconds: s, Nanos: n} }
	const year0, year34089, year2200 = -62167219200, 1013587200000, 7258118400
	for _, tc := range []struct {
		name string
		req  *kittestv1.EchoRequest
		want []string
	}{
		{"MinInt64 seconds", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(math.MinInt64, 0)}}, []string{"schedule.at"}},
		{"year 0", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(year0, 0)}}, []string{"schedule.at"}},
		{"year 34089", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(year34089, 0)}}, []string{"schedule.at"}},
		{"2200 exactly", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(year2200, 0)}}, []string{"schedule.at"}},
		{"before 1970", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(-1, 0)}}, []string{"schedule.at"}},
		{"negative nanos", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(0, -1)}}, []string{"schedule.at"}},
		{"MaxInt64 duration", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{Every: dur(math.MaxInt64, 0)}}, []string{"schedule.every"}},
		{"mixed signs", &kittestv1.EchoRequest{Schedules: []*kittestv1.Schedule{{}, {Every: dur(5, -5)}}}, []string{"schedules[1].every"}},
		{"negative duration", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{Every: dur(-5, 0)}}, []string{"schedule.every"}},
		{"over a hundred years", &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{Every: dur(36526*86400, 0)}}, []string{"schedule.every"}},
		{"every field is named", &kittestv1.EchoRequest{
			Schedule:  &kittestv1.Schedule{At: ts(math.MaxInt64, 0), Every: dur(math.MinInt64, 0)},
			Schedules: []*kittestv1.Schedule{{At: ts(math.MinInt64, 0)}},
		}, []string{"schedule.at", "schedule.every", "schedules[0].at"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.client.Echo(context.Background(), tc.req)
			if code(err) != codes.InvalidArgument {
				t.Fatalf("Echo = %v, want InvalidArgument", err)
			}
			if fields := violatedFields(t, err); !slices.Equal(fields, tc.want) {
				t.Fatalf("violations name %q, want %q", fields, tc.want)
			}
		})
	}
	inWindow := &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{At: ts(0, 0), Every: dur(36525*86400, 0)},
		Schedules: []*kittestv1.Schedule{{At: ts(year2200-1, 999_999_999), Every: dur(0, 0)}}}
	if _, err := f.client.Echo(context.Background(), inWindow); err != nil {
		t.Fatalf("the window's own edges: %v", err)
	}
}

// A denial is audited before the request is validated, and the audit chain
// is never pruned: what a denied caller sends must not grow it unbounded,
// nor come back whole in the error.
func TestDenialsRecordBoundedIDs(t *testing.T) {
	path := t.TempDir() + "/policy.json"
	if err := os.WriteFile(path, []byte(`{"rules": [{"identities": ["dev:local"],
	  "methods": ["/lethe.kittest.v1.KitTestService/Noop"], "tenants": ["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	f := start(t, server.Config{PolicyFile: path})
	before := fileSize(t, f.db.Path())
	hugeRequestID := strings.Repeat("r", 3<<20)
	hugeTenant := strings.Repeat("t", 1<<20)
	for i := range 30 {
		// A message is at most 4 MiB: a huge request id one time, a huge
		// tenant id the next.
		req := &kittestv1.PutRequest{RequestId: hugeRequestID, TenantId: "clio", Key: "k"}
		if i%2 == 1 {
			req = &kittestv1.PutRequest{RequestId: "r" + strings.Repeat("\n", 100), TenantId: hugeTenant, Key: "k"}
		}
		_, err := f.client.Put(context.Background(), req)
		if code(err) != codes.PermissionDenied {
			t.Fatalf("Put = %v, want PermissionDenied", err)
		}
		if len(err.Error()) > 1024 {
			t.Fatalf("the denial echoes %d bytes, want the tenant id bounded", len(err.Error()))
		}
	}
	entries := auditEntries(t, f.audit)
	if len(entries) != 30 {
		t.Fatalf("audit holds %d entries, want the 30 denials", len(entries))
	}
	for _, e := range entries {
		if len(e.RequestID) > 200 || len(e.TenantID) > 200 || !strings.Contains(e.RequestID, "sha256:") {
			t.Fatalf("audited ids = %q / %q, want each bounded with a digest", e.RequestID, e.TenantID)
		}
	}
	if entries[0].RequestID != entries[2].RequestID {
		t.Fatal("one request id recorded two ways; the digest must be stable")
	}
	if grown := fileSize(t, f.db.Path()) - before; grown > 1<<20 {
		t.Fatalf("30 denials grew the file by %d bytes", grown)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A request id is written to the audit chain and to logs; control
// characters there could forge or hide a line.
func TestRequestIDsArePrintableASCII(t *testing.T) {
	f := start(t, server.Config{})
	for _, id := range []string{"a\x00b", "a\nb", "a\x1b[31mb", "a b", "caf\u00e9"} {
		_, err := f.client.Put(context.Background(), put(id, "k", "v"))
		if code(err) != codes.InvalidArgument || !slices.Equal(violatedFields(t, err), []string{"request_id"}) {
			t.Fatalf("Put with request id %q = %v, want InvalidArgument naming request_id", id, err)
		}
	}
	if entries := auditEntries(t, f.audit); len(entries) != 0 {
		t.Fatalf("refused calls were audited: %+v", entries)
	}
	if _, err := f.client.Put(context.Background(), put("0192f0c4-7d1e-7cc3-b0a1-6c2f3e9a1b2c!~", "k", "v")); err != nil {
		t.Fatalf("a printable request id: %v", err)
	}
}

// A status travels in HTTP/2 headers: a refusal listing every one of
// 100,000 invalid items overflowed them and dropped the connection.
func TestManyViolationsAreListedUpToABound(t *testing.T) {
	f := start(t, server.Config{})
	req := &kittestv1.EchoRequest{}
	for range 100_000 {
		req.Schedules = append(req.Schedules, &kittestv1.Schedule{Every: &durationpb.Duration{Seconds: -1}})
	}
	_, err := f.client.Echo(context.Background(), req)
	if code(err) != codes.InvalidArgument {
		t.Fatalf("Echo = %v, want InvalidArgument", err)
	}
	fields := violatedFields(t, err)
	if len(fields) != apierror.MaxViolations+1 || fields[0] != "schedules[0].every" || fields[len(fields)-1] != "" {
		t.Fatalf("%d violations, first %q, want %d and a last one counting the rest", len(fields), fields[0], apierror.MaxViolations)
	}
	if last := apierror.Violations(err)[apierror.MaxViolations].Description; last != "and 99950 more violations" {
		t.Fatalf("last violation = %q", last)
	}
	// The connection survived: the next call on it works.
	if _, err := f.client.Noop(context.Background(), &kittestv1.NoopRequest{}); err != nil {
		t.Fatalf("Noop after the refusal: %v", err)
	}
}

// TestOversizedListsAreRefusedOnTheirCount: a list longer than its rule
// allows is refused naming the list, wherever it sits, without its entries
// being validated one by one (which cost seconds for 100,000 of them);
// a list within its bound still has its entries checked.
func TestOversizedListsAreRefusedOnTheirCount(t *testing.T) {
	f := start(t, server.Config{})
	tags := make([]string, 100_000) // every tag also breaks min_len
	req := &kittestv1.EchoRequest{Schedules: []*kittestv1.Schedule{{Tags: []string{"ok"}}, {Tags: tags}}}
	_, err := f.client.Echo(context.Background(), req)
	if fields := violatedFields(t, err); code(err) != codes.InvalidArgument || len(fields) != 1 || fields[0] != "schedules[1].tags" {
		t.Fatalf("Echo with 100,000 tags = %v (%q), want InvalidArgument naming schedules[1].tags only", err, fields)
	}
	if desc := apierror.Violations(err)[0].Description; !strings.Contains(desc, "no more than 3") {
		t.Errorf("description %q does not say the bound", desc)
	}

	// Within the bound, each entry is validated as before.
	req = &kittestv1.EchoRequest{Schedule: &kittestv1.Schedule{Tags: []string{"ok", "x"}}}
	_, err = f.client.Echo(context.Background(), req)
	if fields := violatedFields(t, err); code(err) != codes.InvalidArgument || len(fields) != 1 || fields[0] != "schedule.tags[1]" {
		t.Fatalf("Echo with a short tag = %v (%q), want InvalidArgument naming schedule.tags[1]", err, fields)
	}
}
