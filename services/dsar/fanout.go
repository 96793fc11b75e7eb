package dsar

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/server"
)

// FanoutHealthName is the health detail (server.HealthDetail) under which
// the service reports its fan-out: NOT_SERVING while a verified request's
// fan-out has failed for longer than Options.FanoutUnhealthyAfter. The
// service's own name, which readiness probes, stays SERVING: one
// unreachable neighbour must not stop the intake of every request.
const FanoutHealthName = ServiceName + "/fanout"

// fanoutFailure is a request whose fan-out failed at its last attempt: a
// neighbour (consent, retention, the registry) could not be asked what to
// send, or the plan could not be committed. The sweep retries it; until
// one attempt succeeds it is counted in lethe.dsar.fanout.failing, shown
// on the request (Request.fanout_problem) and, once old enough, turns the
// health detail FanoutHealthName NOT_SERVING, so that an unreachable
// neighbour shows in minutes rather than at the request's deadline.
type fanoutFailure struct {
	tenant string
	// step is the step whose call failed.
	step dsarv1.FanoutStep
	// err is the last error, bounded and with the subject's id redacted.
	err string
	// since is the first failure of the current run of failures, since
	// the process started (the record is not kept across restarts), and
	// last the latest.
	since, last time.Time
	// attempts counts the failed attempts since since.
	attempts int64
}

// problem is the failure as the request shows it.
func (f fanoutFailure) problem() *dsarv1.FanoutProblem {
	return &dsarv1.FanoutProblem{Step: f.step, Error: f.err, FirstFailedAt: timestamppb.New(f.since),
		LastFailedAt: timestamppb.New(f.last), Attempts: f.attempts}
}

// fanoutFailures are the requests whose fan-out is failing, by id.
type fanoutFailures struct {
	mu sync.Mutex
	m  map[string]fanoutFailure
}

// record notes that id's fan-out failed at now with err and returns the
// record.
func (f *fanoutFailures) record(id, tenant string, err error, now time.Time) fanoutFailure {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]fanoutFailure{}
	}
	rec, ok := f.m[id]
	if !ok {
		rec.since = now
	}
	rec.tenant, rec.step, rec.err, rec.last = tenant, stepOf(err), err.Error(), now
	rec.attempts++
	f.m[id] = rec
	return rec
}

// clear forgets id: its fan-out committed, or it is no longer pending.
func (f *fanoutFailures) clear(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, id)
}

// keepOnly forgets every request that is not in pending (cancelled or
// closed while its fan-out was failing).
func (f *fanoutFailures) keepOnly(pending map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.m {
		if _, ok := pending[id]; !ok {
			delete(f.m, id)
		}
	}
}

// get returns id's failure, if its fan-out is failing.
func (f *fanoutFailures) get(id string) (fanoutFailure, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec, ok := f.m[id]
	return rec, ok
}

// snapshot returns the failing requests.
func (f *fanoutFailures) snapshot() []fanoutFailure {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]fanoutFailure, 0, len(f.m))
	for _, rec := range f.m {
		out = append(out, rec)
	}
	return out
}

// oldest returns when the oldest failing fan-out started failing, or false
// when none is failing.
func (f *fanoutFailures) oldest() (time.Time, bool) {
	var since time.Time
	for _, rec := range f.snapshot() {
		if since.IsZero() || rec.since.Before(since) {
			since = rec.since
		}
	}
	return since, !since.IsZero()
}

// stepError is a fan-out error with the step it came from.
type stepError struct {
	step dsarv1.FanoutStep
	err  error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// atStep marks err as the failure of step, unless an inner call already
// named its step; nil stays nil.
func atStep(step dsarv1.FanoutStep, err error) error {
	var se *stepError
	if err == nil || errors.As(err, &se) {
		return err
	}
	return &stepError{step: step, err: err}
}

// stepOf is the step a fan-out error came from.
func stepOf(err error) dsarv1.FanoutStep {
	var se *stepError
	if errors.As(err, &se) {
		return se.step
	}
	return dsarv1.FanoutStep_FANOUT_STEP_UNSPECIFIED
}

// stepLabel is a step's name in metrics: "registry", "retention",
// "consent", "commit".
func stepLabel(step dsarv1.FanoutStep) string {
	return strings.ToLower(strings.TrimPrefix(step.String(), "FANOUT_STEP_"))
}

// maxFanoutError bounds the error a request shows: enough for a gRPC
// status and the address it could not reach.
const maxFanoutError = 512

// redactFanoutError returns err as the request may show and the log may
// write it: the subject's id, which a neighbour's error may echo ("subject
// \"…\" not found"), replaced, and the text bounded to maxFanoutError
// bytes. Nothing else personal reaches a neighbour: identifiers are never
// sent, only the pseudonymous subject id, purposes and categories. The
// step is kept.
func redactFanoutError(err error, subject string) error {
	msg := err.Error()
	if subject != "" {
		msg = strings.ReplaceAll(msg, subject, "<subject>")
	}
	if len(msg) > maxFanoutError {
		cut := maxFanoutError - len("…")
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &stepError{step: stepOf(err), err: errors.New(msg)}
}

// fanoutHealth reports the fan-out in health (FanoutHealthName) once the
// service is registered on a server.
type fanoutHealth struct {
	detail atomic.Pointer[server.HealthDetail]
}

// reportFanoutHealth sets the health detail: NOT_SERVING while the
// oldest failing fan-out has failed for longer than
// Options.FanoutUnhealthyAfter. Before Register there is none to set.
func (s *Service) reportFanoutHealth() {
	d := s.fanoutHealth.detail.Load()
	if d == nil {
		return
	}
	since, failing := s.fanout.oldest()
	d.Set(!failing || s.Clock.Now().Sub(since) <= s.opts.FanoutUnhealthyAfter)
}
