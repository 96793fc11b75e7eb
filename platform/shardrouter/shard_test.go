package shardrouter

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

func TestShardNames(t *testing.T) {
	for _, ok := range []string{"s0", "s1", "s10", "s999"} {
		if !Valid(ok) {
			t.Errorf("Valid(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "s", "s01", "s1000", "S1", "s-1", "s+1", "x1", "s1 "} {
		if Valid(bad) {
			t.Errorf("Valid(%q) = true", bad)
		}
	}
	if Of("") != DefaultShard || Of("s3") != "s3" || Name(7) != "s7" {
		t.Fatal("Of or Name")
	}
	if got := Address("lethe-consent-{shard}:7401", "s2"); got != "lethe-consent-s2:7401" {
		t.Fatalf("Address = %q", got)
	}
}

// TestWrongShardReadsTheRefusal: the shard a WRONG_SHARD refusal names,
// as a caller receives it over gRPC; nothing from any other error.
func TestWrongShardReadsTheRefusal(t *testing.T) {
	refusal := apierror.FailedPrecondition(apierror.ReasonWrongShard, "tenant on s3").WithMetadata(map[string]string{"shard": "s3"})
	wire := status.ErrorProto(apierror.ToStatus(refusal).Proto())
	if got, ok := WrongShard(wire); !ok || got != "s3" {
		t.Fatalf("WrongShard(refusal) = %q, %v", got, ok)
	}
	for _, err := range []error{
		nil,
		errors.New("plain"),
		status.Error(codes.FailedPrecondition, "no details"),
		status.ErrorProto(apierror.ToStatus(apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, "other")).Proto()),
		status.ErrorProto(apierror.ToStatus(apierror.FailedPrecondition(apierror.ReasonWrongShard, "bad").
			WithMetadata(map[string]string{"shard": "nowhere"})).Proto()),
	} {
		if got, ok := WrongShard(err); ok {
			t.Errorf("WrongShard(%v) = %q, want none", err, got)
		}
	}
}
