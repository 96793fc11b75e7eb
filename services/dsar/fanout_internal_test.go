package dsar

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
)

// TestRedactFanoutError: a neighbour's error that echoes the subject's id
// (the retention service's NotFound names the subject it was asked about)
// is shown and logged without it, bounded to maxFanoutError bytes cut on
// a character boundary, and keeps its step.
func TestRedactFanoutError(t *testing.T) {
	echo := atStep(dsarv1.FanoutStep_FANOUT_STEP_RETENTION,
		fmt.Errorf("retention: list holds: %w", errors.New(`rpc error: code = NotFound desc = subject "cust-4711" not found`)))
	got := redactFanoutError(echo, "cust-4711")
	if strings.Contains(got.Error(), "cust-4711") || !strings.Contains(got.Error(), `subject "<subject>" not found`) {
		t.Fatalf("redacted = %q", got)
	}
	if stepOf(got) != dsarv1.FanoutStep_FANOUT_STEP_RETENTION {
		t.Fatalf("step after redaction = %v", stepOf(got))
	}
	// A long error of multi-byte characters is cut before a whole one.
	long := atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, errors.New("registry: "+strings.Repeat("ö", 600)))
	got = redactFanoutError(long, "")
	if msg := got.Error(); len(msg) > maxFanoutError || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
		t.Fatalf("bounded error: %d bytes, valid %t, %q…", len(msg), utf8.ValidString(msg), msg[:20])
	}
	if short := redactFanoutError(atStep(dsarv1.FanoutStep_FANOUT_STEP_COMMIT, errors.New("timeout")), "subject-9"); short.Error() != "timeout" {
		t.Fatalf("a short error without the subject changed: %q", short)
	}
}
