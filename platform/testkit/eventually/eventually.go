// Package eventually waits, in a test, for something another goroutine or
// process makes true: an event consumed, a loop's tick, a server up. It
// polls a condition until it holds and fails the test when it does not
// hold in time, naming what was awaited and the condition's last answer.
//
// Wait only for what must happen. Never wait a fixed time and then check
// that something did not happen: on a slow machine that check passes
// without testing anything. Wait instead for a later event that proves the
// earlier one was handled (a marker published after it, a consumer with
// nothing pending, a sweep run to its end), then check.
//
// The SDK keeps its own copy (sdk/internal/eventually), since it may not
// import the kit.
package eventually

import (
	"testing"
	"time"
)

const (
	// Timeout is how long a wait lasts by default. It is generous because
	// the tests run with the race detector on a loaded two-core machine,
	// and a wait that succeeds returns as soon as its condition holds.
	Timeout = 30 * time.Second
	// Interval is how long a wait sleeps between two polls by default.
	Interval = 5 * time.Millisecond
)

// Poll is a wait's bounds; a zero field takes its default (Timeout,
// Interval). A condition that runs a process or a remote call polls less
// often: Poll{Interval: 100 * time.Millisecond}.
type Poll struct {
	// Timeout is how long to wait for the condition.
	Timeout time.Duration
	// Interval is how long to sleep between two polls.
	Interval time.Duration
}

// True waits with the default bounds until cond returns true.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Poll{}.True(t, what, cond)
}

// Succeeds waits with the default bounds until try returns nil, and on
// timeout reports try's last error.
func Succeeds(t testing.TB, what string, try func() error) {
	t.Helper()
	Poll{}.Succeeds(t, what, try)
}

// True polls cond until it returns true, failing t (from the test's
// goroutine) when it did not within p's timeout.
func (p Poll) True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if err := p.wait(func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}); err != nil {
		t.Fatalf("eventually: %s: not reached within %s", what, p.timeout())
	}
}

// Succeeds polls try until it returns nil, failing t (from the test's
// goroutine) with try's last error when it did not within p's timeout.
func (p Poll) Succeeds(t testing.TB, what string, try func() error) {
	t.Helper()
	if err := p.wait(try); err != nil {
		t.Fatalf("eventually: %s: not reached within %s; last: %v", what, p.timeout(), err)
	}
}

// errNotYet is True's answer while its condition is false.
var errNotYet = notYet{}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

// wait polls try until it returns nil or the timeout passed, and returns
// try's last error.
func (p Poll) wait(try func() error) error {
	interval := p.Interval
	if interval <= 0 {
		interval = Interval
	}
	deadline := time.Now().Add(p.timeout())
	for {
		err := try()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

func (p Poll) timeout() time.Duration {
	if p.Timeout <= 0 {
		return Timeout
	}
	return p.Timeout
}
