package eventually_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
)

// recorder is a testing.TB that records a Fatalf instead of ending the
// goroutine, so that a wait's failure can be examined.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestTrueReturnsOnceTheConditionHolds(t *testing.T) {
	var polls atomic.Int64
	r := &recorder{TB: t}
	eventually.True(r, "the third poll", func() bool { return polls.Add(1) == 3 })
	if r.failed != "" || polls.Load() != 3 {
		t.Fatalf("failed %q after %d polls, want success at the third", r.failed, polls.Load())
	}
}

func TestTrueFailsNamingWhatWasAwaited(t *testing.T) {
	r := &recorder{TB: t}
	start := time.Now()
	eventually.Poll{Timeout: 50 * time.Millisecond}.True(r, "the impossible", func() bool { return false })
	if !strings.Contains(r.failed, "the impossible") {
		t.Fatalf("failure = %q, want it to name what was awaited", r.failed)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("gave up before the timeout")
	}
}

func TestSucceedsReportsTheLastError(t *testing.T) {
	var polls atomic.Int64
	r := &recorder{TB: t}
	eventually.Poll{Timeout: 30 * time.Millisecond, Interval: time.Millisecond}.Succeeds(r, "a call", func() error {
		return fmt.Errorf("attempt %d refused", polls.Add(1))
	})
	if want := fmt.Sprintf("attempt %d refused", polls.Load()); !strings.Contains(r.failed, want) || !strings.Contains(r.failed, "a call") {
		t.Fatalf("failure = %q, want what was awaited and the last error %q", r.failed, want)
	}
	r = &recorder{TB: t}
	eventually.Succeeds(r, "a call that works", func() error { return nil })
	if r.failed != "" {
		t.Fatalf("a nil error failed: %s", r.failed)
	}
}
