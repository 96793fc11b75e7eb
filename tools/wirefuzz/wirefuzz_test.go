package wirefuzz

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
)

func allMethods(t *testing.T) []*Method {
	t.Helper()
	services := Services()
	if len(services) != 4 {
		t.Fatalf("services %v, want Lethe's four", services)
	}
	methods, err := Methods(services...)
	if err != nil {
		t.Fatal(err)
	}
	return methods
}

func generators(t *testing.T, seed uint64) []*generator {
	t.Helper()
	b, err := newBuilder("fuzz", time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	var gens []*generator
	for _, m := range allMethods(t) {
		base := b.base(m.Input)
		gens = append(gens, &generator{rng: rng, method: m, base: base, targets: targets(base.ProtoReflect())})
	}
	return gens
}

// valueAt decodes an input and returns the value at its field path.
func valueAt(t *testing.T, in *Input) (proto.Message, protoreflect.Value) {
	t.Helper()
	m := in.Method.Input.New().Interface()
	if err := proto.Unmarshal(in.Bytes, m); err != nil {
		t.Fatalf("%s %s: %v", in.Method.Short(), in.Kind, err)
	}
	s, ok := slotAt(m.ProtoReflect(), in.Field)
	if !ok {
		t.Fatalf("%s %s: no field %q in the decoded input", in.Method.Short(), in.Kind, in.Field)
	}
	v, _ := s.get()
	return m, v
}

// heavySample says whether the i-th method is one the tests build heavy
// inputs for: every fifth, which keeps the race-enabled run short and
// still gives every heavy kind several methods.
func heavySample(i int, k Kind) bool { return !HeavyKinds[k] || i%5 == 0 }

// Every kind of input holds what it says it holds, for every method it
// applies to (heavy kinds: a sample of them): the checks rest on these
// claims.
func TestInputsAreWhatTheyClaim(t *testing.T) {
	seen := map[Kind]int{}
	for i, g := range generators(t, 1) {
		for _, k := range append([]Kind{KindBase}, Kinds...) {
			if !g.applicable(k) || !heavySample(i, k) {
				continue
			}
			seen[k]++
			in := g.input(k)
			where := g.method.Short() + " " + string(k) + " " + in.Field
			switch k {
			case KindBase:
				if !in.Decodable {
					t.Errorf("%s: the base does not decode: %s", where, in.DecodeError)
				}
			case KindEmpty:
				if len(in.Bytes) != 0 || !in.Decodable {
					t.Errorf("%s: %d bytes", where, len(in.Bytes))
				}
			case KindHugeString:
				if _, v := valueAt(t, in); len(v.String()) < 64<<10 {
					t.Errorf("%s: %d bytes", where, len(v.String()))
				}
			case KindInvalidUTF8:
				if in.Decodable || !strings.Contains(in.DecodeError, "UTF-8") {
					t.Errorf("%s: decodes (%q)", where, in.DecodeError)
				}
			case KindTimestamp:
				_, v := valueAt(t, in)
				if err := v.Message().Interface().(*timestamppb.Timestamp).CheckValid(); err == nil || !in.InvalidBySpec {
					t.Errorf("%s: %s is a valid timestamp", where, in.Value)
				}
			case KindDuration:
				_, v := valueAt(t, in)
				if err := v.Message().Interface().(*durationpb.Duration).CheckValid(); err == nil || !in.InvalidBySpec {
					t.Errorf("%s: %s is a valid duration", where, in.Value)
				}
			case KindRepeated100k:
				if _, v := valueAt(t, in); v.List().Len() != repeatedItems {
					t.Errorf("%s: %d items", where, v.List().Len())
				}
			case KindUnknownField:
				m := in.Method.Input.New().Interface()
				if err := proto.Unmarshal(in.Bytes, m); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				if _, ok := unknownIn(m.ProtoReflect(), ""); !ok {
					t.Errorf("%s: no unknown field after decoding", where)
				}
			case KindDeepGroups:
				if deep := strings.Contains(in.Value, "100000"); deep == in.Decodable {
					t.Errorf("%s: %s, decodable %v", where, in.Value, in.Decodable)
				}
			case KindTruncated:
				full := g.encode(g.fresh())
				if len(full) >= 2 && len(in.Bytes) >= len(full) {
					t.Errorf("%s: %d bytes of %d", where, len(in.Bytes), len(full))
				}
			}
		}
	}
	for _, k := range append([]Kind{KindBase}, Kinds...) {
		if seen[k] == 0 {
			t.Errorf("no method takes inputs of kind %s", k)
		}
	}
}

// The same seed sends the same bytes.
func TestInputsAreRepeatable(t *testing.T) {
	a, b := generators(t, 7), generators(t, 7)
	for i := range a {
		for _, k := range Kinds {
			if !a[i].applicable(k) || !heavySample(i, k) {
				continue
			}
			if x, y := a[i].input(k), b[i].input(k); !bytes.Equal(x.Bytes, y.Bytes) || x.Field != y.Field {
				t.Fatalf("%s %s: two runs of seed 7 differ", a[i].method.Short(), k)
			}
		}
	}
}

// The base requests pass protovalidate where a generic filler can make them
// pass: most of them.
func TestBasesMostlyValid(t *testing.T) {
	gens := generators(t, 1)
	b, _ := newBuilder("fuzz", time.Now())
	valid := 0
	for _, g := range gens {
		if len(b.violations(g.base)) == 0 {
			valid++
		}
	}
	if valid*10 < len(gens)*9 {
		t.Fatalf("%d of %d bases pass protovalidate", valid, len(gens))
	}
}

// Stores reads a bbolt file's last transaction id without opening it: a
// commit moves it, a read does not.
func TestStoresSeeEveryCommit(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	snap := Stores(dir)
	s0, err := snap()
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if len(s0.Of("x")) != 1 || len(s0.Of("y")) != 0 {
		t.Fatalf("Of: %v, %v", s0.Of("x"), s0.Of("y"))
	}
	if s1, _ := snap(); !s1.Equal(s0) {
		t.Fatalf("a read changed the state: %s", s0.Diff(s1))
	}
	for range 3 { // both meta pages, in turn
		before, _ := snap()
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists([]byte("b"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		after, _ := snap()
		if after["x.db"].TxID != before["x.db"].TxID+1 {
			t.Fatalf("a commit moved the transaction id %d to %d", before["x.db"].TxID, after["x.db"].TxID)
		}
	}
}

func invalid(violations ...apierror.FieldViolation) Outcome {
	return outcomeOf(apierror.InvalidArgument(violations...).GRPCStatus().Err())
}

func TestCheck(t *testing.T) {
	method := &Method{FullName: "/lethe.consent.v1.ConsentService/RecordConsent",
		Input:  (&consentv1.RecordConsentRequest{}).ProtoReflect().Type(),
		Output: (&consentv1.RecordConsentResponse{}).ProtoReflect().Type()}
	decodable := &Input{Method: method, Kind: KindControlChars, Field: "consent.subject_id", Decodable: true}
	garbage := &Input{Method: method, Kind: KindGarbage, DecodeError: "cannot parse"}
	late := &Input{Method: method, Kind: KindTimestamp, Field: "consent.given_at", Decodable: true, InvalidBySpec: true}
	echo, _ := proto.Marshal(&consentv1.RecordConsentResponse{})
	echo = append(echo, 0xba, 0x3e, 0x01, 'u') // field 999, one byte

	bareInvalid := outcomeOf(status.Error(codes.InvalidArgument, "bad"))
	unnamed := outcomeOf(func() error {
		st, _ := status.New(codes.InvalidArgument, "bad").WithDetails(&errdetails.BadRequest{
			FieldViolations: []*errdetails.BadRequest_FieldViolation{{Description: "only one of a, b"}}})
		return st.Err()
	}())
	for _, tc := range []struct {
		name      string
		in        *Input
		out       Outcome
		baseValid bool
		want      []Check
	}{
		{"internal", decodable, outcomeOf(status.Error(codes.Internal, "x")), true, []Check{CheckStatus}},
		{"unknown", garbage, outcomeOf(status.Error(codes.Unknown, "x")), true, []Check{CheckStatus}},
		{"a broken transport", decodable, outcomeOf(status.Error(codes.Unavailable, "x")), true, []Check{CheckStatus}},
		{"backlog full is deliberate", decodable, outcomeOf(apierror.Unavailable(apierror.ReasonBacklogFull, "x", time.Second)), true, nil},
		{"undecodable refused with a description", garbage, bareInvalid, true, nil},
		{"undecodable refused otherwise", garbage, outcomeOf(status.Error(codes.NotFound, "x")), true, []Check{CheckUndecodable}},
		{"decodable without BadRequest", decodable, bareInvalid, true, []Check{CheckFieldNotNamed}},
		{"a violation without a field", decodable, unnamed, true, []Check{CheckFieldNotNamed}},
		{"the changed field", decodable, invalid(apierror.FieldViolation{Field: "consent.subject_id", Description: "d"}), true, nil},
		{"a field inside it", &Input{Method: method, Kind: KindTimestamp, Field: "consent", Decodable: true},
			invalid(apierror.FieldViolation{Field: "consent.given_at", Description: "d"}), true, nil},
		{"its parent", decodable, invalid(apierror.FieldViolation{Field: "consent", Description: "d"}), true, nil},
		{"a prefix that is not its parent", decodable, invalid(apierror.FieldViolation{Field: "consent.subject", Description: "d"}), true, []Check{CheckWrongField}},
		{"another field", decodable, invalid(apierror.FieldViolation{Field: "tenant_id", Description: "d"}), true, []Check{CheckWrongField}},
		{"a sibling in the message the change created (a oneof's other member)",
			&Input{Method: method, Kind: KindControlChars, Field: "record.source", Created: "record", Decodable: true},
			invalid(apierror.FieldViolation{Field: "record.category", Description: "d"}), true, nil},
		{"a field outside the message the change created",
			&Input{Method: method, Kind: KindControlChars, Field: "record.source", Created: "record", Decodable: true},
			invalid(apierror.FieldViolation{Field: "tenant_id", Description: "d"}), true, []Check{CheckWrongField}},
		{"another field when the base is refused too", decodable, invalid(apierror.FieldViolation{Field: "tenant_id", Description: "d"}), false, nil},
		{"an invalid timestamp accepted", late, Outcome{Code: codes.OK}, true, []Check{CheckAcceptedInvalid}},
		{"an unknown field echoed", decodable, Outcome{Code: codes.OK, Response: echo}, true, []Check{CheckEchoedUnknown}},
		{"not found", decodable, outcomeOf(apierror.NotFound("purpose", "p")), true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Check
			for _, m := range check(tc.in, tc.out, tc.baseValid) {
				got = append(got, m.Check)
			}
			if strings.Join(toStrings(got), ",") != strings.Join(toStrings(tc.want), ",") {
				t.Fatalf("checks %v, want %v", got, tc.want)
			}
		})
	}
}

func toStrings(cs []Check) []string {
	var s []string
	for _, c := range cs {
		s = append(s, string(c))
	}
	return s
}

// TestTargetsNameTheMessageTheyCreate: a field inside a message the base
// does not hold names that message as created; one inside a message the
// base holds names none.
func TestTargetsNameTheMessageTheyCreate(t *testing.T) {
	base := &consentv1.RecordConsentRequest{TenantId: "t", SubjectId: "s"}
	got := map[string]string{}
	for _, tg := range targets(base.ProtoReflect()) {
		got[tg.path] = tg.created
	}
	for path, want := range map[string]string{"subject_id": "", "evidence": "", "evidence.ip_address": "evidence", "given_at": ""} {
		if c, ok := got[path]; !ok || c != want {
			t.Errorf("target %s: created %q (present %v), want %q", path, c, ok, want)
		}
	}
	base.Evidence = &consentv1.EvidenceInput{IpAddress: "192.0.2.1"}
	for _, tg := range targets(base.ProtoReflect()) {
		if tg.path == "evidence.user_agent" && tg.created != "" {
			t.Errorf("target %s: created %q with evidence in the base, want none", tg.path, tg.created)
		}
	}
}
