package main

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
)

// TestDsarShowsAFailingFanout: a request whose fan-out keeps failing says
// so in dsar list's state column, and dsar show names the step, since
// when, the attempts and the last error; once the problem is gone,
// neither says anything of it. (The service side, a fan-out that fails
// at every sweep, is TestAFanOutProblemNamesTheConsentStep's.)
func TestDsarShowsAFailingFanout(t *testing.T) {
	since := time.Date(2026, 5, 4, 9, 0, 0, 0, time.UTC)
	r := &dsarv1.Request{DsarId: "01J0STUCK", Type: dsarv1.RequestType_REQUEST_TYPE_CONSENT_WITHDRAWAL, SubjectId: "sub-43",
		State: dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS,
		FanoutProblem: &dsarv1.FanoutProblem{Step: dsarv1.FanoutStep_FANOUT_STEP_CONSENT, Error: "consent: withdraw newsletter: rpc error: code = Unavailable",
			FirstFailedAt: timestamppb.New(since), LastFailedAt: timestamppb.New(since.Add(3 * time.Minute)), Attempts: 9}}
	var list, show bytes.Buffer
	requestColumns.print(&list, r)
	printRequest(&show, r)
	if !regexp.MustCompile(`01J0STUCK\s+consent_withdrawal\s+sub-43\s+in_progress \(fan-out failing: consent\)`).MatchString(list.String()) {
		t.Errorf("dsar list does not mark the failing fan-out:\n%s", list.String())
	}
	want := "fan-out failing at step consent since 2026-05-04T09:00:00Z, 9 attempts, last 2026-05-04T09:03:00Z; retried every sweep\n" +
		"error: consent: withdraw newsletter: rpc error: code = Unavailable\n"
	if !bytes.Contains(show.Bytes(), []byte(want)) {
		t.Errorf("dsar show does not tell the failing fan-out; want\n%s\nin\n%s", want, show.String())
	}

	r.FanoutProblem = nil
	list.Reset()
	show.Reset()
	requestColumns.print(&list, r)
	printRequest(&show, r)
	if bytes.Contains(list.Bytes(), []byte("fan-out")) || bytes.Contains(show.Bytes(), []byte("fan-out")) {
		t.Errorf("a request without a problem shows one:\n%s\n%s", list.String(), show.String())
	}
}
