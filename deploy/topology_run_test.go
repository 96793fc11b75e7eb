//go:build unix

package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

var (
	topologyRounds = flag.Int("topology.rounds", 1, "rounds of the fault sequence (make soak-topology runs more)")
	topologyReport = flag.String("topology.report", "", "file (docs/operations.md) whose topology soak section receives the counts")
	// Short in make test: long enough for the other two nodes to elect
	// leaders without the partitioned one and store events without it,
	// short of the clients' and routes' own detection of a dead
	// connection (two missed pings, minutes), which the soak reaches.
	topologyPartition = flag.Duration("topology.partition", 5*time.Second, "how long a NATS node stays partitioned away (make soak-topology: longer)")
)

// TestProductionTopology runs the production overlay as separate
// processes (topology_test.go), then through it: the lethe CLI applies a
// tenant file over mutual TLS, records a consent grant and its
// withdrawal, each answered by the consent read replica when asked with
// the write's revision, and files an erasure, and the withdrawal and the
// erasure complete with both systems' answers. Then, while a stream of
// erasures and withdrawals runs, it kills -9 one NATS node, each service
// once (the replica answering while the consent writer is down), and
// freezes one system for longer than its ack wait, restarting each;
// afterwards every acknowledged request has completed with every system's
// answer, the replica answers a new grant at its revision, no system
// applied a request twice, and the three replicas of the stream agree. Where the machine allows network
// namespaces (topology_netns_linux_test.go), each round also partitions
// one NATS node away for a while and heals it.
func TestProductionTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("starts twelve processes and injects faults; runs without -short")
	}
	if runInNetworkNamespace(t) {
		return
	}
	began := time.Now()
	tp := startTopology(t)
	t.Logf("topology ready in %s", time.Since(began).Round(100*time.Millisecond))

	// The operator applies the tenant over mutual TLS, as the production
	// policy's lethe-operator identity.
	if out := tp.mustLethe("apply", "-f", topologyTenant); !strings.Contains(out, "tenant clio created") {
		t.Fatalf("apply should create tenant clio:\n%s", out)
	}
	c := tp.clients()
	// Each write's revision is a consistency token: the consent read
	// replica, on its own identity behind lethe-consent-read, answers a
	// Check that passes it only once it has the write.
	var granted, withdrawn written
	decodeJSON(t, tp.mustLethe("consent", "grant", "--tenant", "clio", "--subject", "sub-1", "--purpose", "newsletter", "--method", "form",
		"-o", "json"), &granted)
	c.replicaAnswers(t, granted, true)
	decodeJSON(t, tp.mustLethe("consent", "withdraw", "--tenant", "clio", "--subject", "sub-1", "--purpose", "newsletter",
		"--method", "email_link", "-o", "json"), &withdrawn)
	c.replicaAnswers(t, withdrawn, false)
	tp.lastWrite = withdrawn
	var created struct{ Request struct{ DsarID string } }
	decodeJSON(t, tp.mustLethe("dsar", "create", "--tenant", "clio", "--subject", "sub-2", "--type", "erasure",
		"--email", "ada@example.com", "-o", "json"), &created)
	if withdrawn.Record.RecordID == "" || created.Request.DsarID == "" {
		t.Fatalf("no record id %q or DSAR id %q", withdrawn.Record.RecordID, created.Request.DsarID)
	}
	tp.mustLethe("dsar", "verify", "--tenant", "clio", "--id", created.Request.DsarID, "--attest", "manual", "--evidence", "topology-1")

	acked := []request{
		{kind: contract.KindConsentWithdrawn, id: withdrawn.Record.RecordID, subject: "sub-1"},
		{kind: contract.KindErasureRequested, id: created.Request.DsarID, subject: "sub-2"},
	}
	c.waitComplete(t, acked, time.Minute)
	// The CLI shows what the API said.
	if out := tp.mustLethe("dsar", "show", "--tenant", "clio", "--id", created.Request.DsarID); !strings.Contains(out, "complete: yes") {
		t.Errorf("lethe dsar show does not show the erasure complete:\n%s", out)
	}
	if out := tp.mustLethe("consent", "fanout", "--tenant", "clio", "--record", withdrawn.Record.RecordID); !strings.Contains(out, "complete: yes") {
		t.Errorf("lethe consent fanout does not show the withdrawal complete:\n%s", out)
	}
	if n, by := tp.crashes(); n != 0 {
		t.Fatalf("processes exited on their own before any fault: %v", by)
	}
	t.Logf("withdrawal and erasure complete at %s", time.Since(began).Round(100*time.Millisecond))

	// Faults, each while the stream of requests runs. From now on a
	// process that exits on its own is restarted, as the kubelet does, and
	// counted: the faults are the test's, such an exit is the software's.
	for _, p := range tp.processes() {
		p.superviseFromNow()
	}
	load := c.startLoad(t)
	faults := 0
	for round := range *topologyRounds {
		for _, f := range tp.faults(load, c, round) {
			before := load.ackedCount()
			t.Logf("round %d: %s", round+1, f.name)
			f.inject(t)
			faults++
			// The stream goes on after the fault: two more requests are
			// acknowledged.
			load.waitAcked(t, before+2, time.Minute)
		}
	}
	acked = append(acked, load.stop(t)...)
	t.Logf("faults injected by %s; %d requests acknowledged", time.Since(began).Round(100*time.Millisecond), len(acked))
	c.waitComplete(t, acked, 2*time.Minute)
	// The replica follows the restarted writer after every fault: it
	// answers a new write at that write's revision.
	var regranted written
	decodeJSON(t, tp.mustLethe("consent", "grant", "--tenant", "clio", "--subject", "sub-1", "--purpose", "newsletter", "--method", "form",
		"-o", "json"), &regranted)
	c.replicaAnswers(t, regranted, true)
	t.Logf("after the faults the consent replica answers revision %d; its lag %s", regranted.Revision, tp.replicaLag(t))

	// No system applied a request twice, and each applied every
	// acknowledged one exactly once.
	counts := tp.systemCounts()
	events, twice := 0, 0
	for _, system := range topologySystems {
		for key, n := range counts[system] {
			events += int(n)
			if n > 1 {
				twice++
			}
			if n != 1 {
				t.Errorf("%s applied %q %d times", system, key, n)
			}
		}
		for _, r := range acked {
			if counts[system][r.key()] != 1 {
				t.Errorf("%s applied acknowledged %q %d times, want once", system, r.key(), counts[system][r.key()])
			}
		}
	}
	tp.waitReplicasAgree(t, time.Minute)
	tp.checkNoRaces()
	t.Logf("%d requests acknowledged and complete, %d events applied by the systems, %d faults survived; %s in all",
		len(acked), events, faults, time.Since(began).Round(time.Second))
	crashes, by := tp.crashes()
	if crashes != 0 {
		t.Logf("processes that exited on their own during the faults and were restarted: %v", by)
	}
	if *topologyReport != "" && !t.Failed() {
		writeSoakReport(t, *topologyReport, soakCounts{rounds: *topologyRounds, requests: len(acked), events: events, twice: twice,
			faults: faults, failedCalls: load.failedCalls(), crashes: by, took: time.Since(began), partitioned: tp.net != nil})
	}
}

func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// request is an acknowledged erasure or withdrawal.
type request struct {
	kind    contract.Kind
	id      string // the DSAR id, or the withdrawal's consent record id
	subject string
}

// key is how the test system counts the request (internal/testsystem).
func (r request) key() string { return fmt.Sprintf("%s %s %s", r.kind, r.id, r.subject) }

// clients are the operator's gRPC clients over mutual TLS.
type clients struct {
	tp      *topology
	dsar    dsarv1.DsarServiceClient
	consent consentv1.ConsentServiceClient
	// replica is the consent read replica's pod, reached through its
	// headless Service and verified as lethe-consent-read, the name its
	// certificate carries for the Service that spreads Checks over the
	// writer and the replicas.
	replica consentv1.ConsentServiceClient
}

func (tp *topology) clients() *clients {
	dial := func(svc string) *grpc.ClientConn {
		// Reconnect within a second of a restarted service, as a client
		// that retries would; the default back-off waits up to two minutes.
		conn, err := grpc.NewClient(tp.serviceAddr(svc), grpc.WithTransportCredentials(tp.operatorCreds()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second},
				MinConnectTimeout: 2 * time.Second}))
		if err != nil {
			tp.t.Fatal(err)
		}
		tp.t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	replicaAddrs, err := tp.resolve(consentReplicas, services["consent"])
	if err != nil || len(replicaAddrs) != 1 {
		tp.t.Fatalf("%s:%d: %v %v", consentReplicas, services["consent"], replicaAddrs, err)
	}
	replica, err := grpc.NewClient(replicaAddrs[0], grpc.WithTransportCredentials(tp.operatorCredsFor("lethe-consent-read")))
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { _ = replica.Close() })
	return &clients{tp: tp, dsar: dsarv1.NewDsarServiceClient(dial("dsar")), consent: consentv1.NewConsentServiceClient(dial("consent")),
		replica: consentv1.NewConsentServiceClient(replica)}
}

// written is a consent write as the lethe CLI prints it (-o json): the
// record and the tenant's revision after it, the write's consistency
// token.
type written struct {
	Record struct {
		RecordID  string
		SubjectID string
		PurposeID string
	}
	Revision uint64 `json:",string"`
}

// replicaAnswers asks the consent read replica whether the write's
// subject may be processed for its purpose, passing the write's revision
// as min_revision: the answer must reflect the write (allowed for a
// grant, denied for a withdrawal, resting on the write's record), never
// the state before it. A replica that has not applied the revision yet
// refuses REPLICA_BEHIND, and the caller asks again, as a client would.
func (c *clients) replicaAnswers(t *testing.T, w written, allowed bool) {
	t.Helper()
	var resp *consentv1.CheckResponse
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err = c.replica.Check(ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: w.Record.SubjectID, PurposeId: w.Record.PurposeID,
			MinRevision: w.Revision})
		cancel()
		if err == nil || apierror.ReasonOf(err) != apierror.ReasonReplicaBehind || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("Check on the consent replica at revision %d: %v", w.Revision, err)
	}
	if d := resp.Decision; d.Allowed != allowed || d.BasisId != w.Record.RecordID || resp.Revision < w.Revision {
		t.Fatalf("the consent replica answers %v at revision %d; want allowed=%t on record %s at revision %d or later",
			d, resp.Revision, allowed, w.Record.RecordID, w.Revision)
	}
}

// complete reports whether r has completed with every system's answer,
// and what it looks like otherwise.
func (c *clients) complete(ctx context.Context, r request) (bool, string) {
	want := map[string]eventsv1.OutcomeKind{}
	var got []string
	switch r.kind {
	case contract.KindErasureRequested:
		resp, err := c.dsar.GetRequest(ctx, &dsarv1.GetRequestRequest{TenantId: "clio", DsarId: r.id})
		if err != nil {
			return false, err.Error()
		}
		for _, s := range resp.Request.GetResult().GetTasks() {
			want[s.SystemId] = s.Outcome
			got = append(got, fmt.Sprintf("%s %s %s", s.SystemId, s.State, s.Outcome))
		}
		if resp.Request.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || !resp.Request.GetResult().GetComplete() {
			return false, fmt.Sprintf("%s %v", resp.Request.State, got)
		}
		return answered(want, eventsv1.OutcomeKind_OUTCOME_KIND_ERASED), fmt.Sprint(got)
	default:
		resp, err := c.consent.GetFanout(ctx, &consentv1.GetFanoutRequest{TenantId: "clio",
			Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: r.id}})
		if err != nil {
			return false, err.Error()
		}
		for _, task := range resp.Tasks {
			want[task.SystemId] = task.Outcome
			got = append(got, fmt.Sprintf("%s %s %s", task.SystemId, task.State, task.Outcome))
		}
		if !resp.Complete {
			return false, fmt.Sprint(got)
		}
		return answered(want, eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED), fmt.Sprint(got)
	}
}

// answered reports whether every topology system answered with outcome.
func answered(got map[string]eventsv1.OutcomeKind, outcome eventsv1.OutcomeKind) bool {
	for _, s := range topologySystems {
		if got[s] != outcome {
			return false
		}
	}
	return len(got) == len(topologySystems)
}

// waitComplete polls until every request has completed with every
// system's answer.
func (c *clients) waitComplete(t *testing.T, reqs []request, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	pending := reqs
	for len(pending) > 0 {
		var still []request
		var detail string
		for _, r := range pending {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ok, d := c.complete(ctx, r)
			cancel()
			if !ok {
				still = append(still, r)
				detail = fmt.Sprintf("%s %s: %s", r.kind, r.id, d)
			}
		}
		pending = still
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged requests not complete within %s; the last: %s", len(pending), len(reqs), within, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// load is a stream of erasures and withdrawals, one at a time, each step
// retried under its request id until the platform acknowledges it.
type load struct {
	c *clients

	mu       sync.Mutex
	acked    []request
	attempts int
	failures int
	errs     map[string]int
	err      error

	halt chan struct{}
	done chan struct{}
}

func (c *clients) startLoad(t *testing.T) *load {
	l := &load{c: c, errs: map[string]int{}, halt: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	t.Cleanup(func() {
		select {
		case <-l.halt:
		default:
			close(l.halt)
		}
		<-l.done
	})
	return l
}

func (l *load) run() {
	defer close(l.done)
	for i := 0; ; i++ {
		select {
		case <-l.halt:
			return
		case <-time.After(150 * time.Millisecond):
		}
		var r request
		var err error
		if i%2 == 0 {
			r, err = l.erasure(i)
		} else {
			r, err = l.withdrawal(i)
		}
		l.mu.Lock()
		if err != nil {
			l.err = err
			l.mu.Unlock()
			return
		}
		l.acked = append(l.acked, r)
		l.mu.Unlock()
	}
}

// call runs fn until it succeeds, retrying what a restarting process
// answers (unavailable, deadline exceeded, aborted) for up to a minute.
func (l *load) call(what string, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(time.Minute)
	for {
		l.mu.Lock()
		l.attempts++
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := fn(ctx)
		cancel()
		if err == nil {
			return nil
		}
		code := status.Code(err)
		l.mu.Lock()
		l.failures++
		l.errs[what+": "+code.String()]++
		l.mu.Unlock()
		switch code {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		default:
			return fmt.Errorf("%s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: still failing after a minute: %w", what, err)
		}
		select {
		case <-l.halt:
			if time.Now().After(deadline) {
				return err
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// erasure files an erasure and attests the requester's identity.
func (l *load) erasure(i int) (request, error) {
	subject := fmt.Sprintf("load-%d", i)
	var id string
	err := l.call("CreateRequest", func(ctx context.Context) error {
		resp, err := l.c.dsar.CreateRequest(ctx, &dsarv1.CreateRequestRequest{RequestId: fmt.Sprintf("load-create-%d", i), TenantId: "clio",
			SubjectId: subject, Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
			Erasure: &dsarv1.ErasureDetails{Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE}})
		if err == nil {
			id = resp.Request.DsarId
		}
		return err
	})
	if err != nil {
		return request{}, err
	}
	err = l.call("AttestIdentity", func(ctx context.Context) error {
		_, err := l.c.dsar.AttestIdentity(ctx, &dsarv1.AttestIdentityRequest{RequestId: fmt.Sprintf("load-attest-%d", i), TenantId: "clio",
			DsarId: id, Method: commonv1.VerificationMethod_VERIFICATION_METHOD_MANUAL, EvidenceReference: fmt.Sprintf("ticket-%d", i)})
		return err
	})
	return request{kind: contract.KindErasureRequested, id: id, subject: subject}, err
}

// withdrawal records a consent and its withdrawal.
func (l *load) withdrawal(i int) (request, error) {
	subject := fmt.Sprintf("load-%d", i)
	record := func(action consentv1.ConsentAction, requestID string) (string, error) {
		var id string
		err := l.call("RecordConsent", func(ctx context.Context) error {
			resp, err := l.c.consent.RecordConsent(ctx, &consentv1.RecordConsentRequest{RequestId: requestID, TenantId: "clio",
				SubjectId: subject, PurposeId: "newsletter", Action: action, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM})
			if err == nil {
				id = resp.Record.RecordId
			}
			return err
		})
		return id, err
	}
	if _, err := record(consentv1.ConsentAction_CONSENT_ACTION_GRANT, fmt.Sprintf("load-grant-%d", i)); err != nil {
		return request{}, err
	}
	id, err := record(consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, fmt.Sprintf("load-withdraw-%d", i))
	return request{kind: contract.KindConsentWithdrawn, id: id, subject: subject}, err
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

func (l *load) attemptCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.attempts
}

func (l *load) failedCalls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}

// waitAcked waits until n requests are acknowledged, failing on the
// stream's own failure.
func (l *load) waitAcked(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l.mu.Lock()
		got, err := len(l.acked), l.err
		l.mu.Unlock()
		if err != nil {
			l.c.tp.dumpLogs()
			t.Fatalf("the stream of requests stopped: %v", err)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests acknowledged within %s", got, n, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the stream and returns the acknowledged requests.
func (l *load) stop(t *testing.T) []request {
	t.Helper()
	close(l.halt)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatalf("the stream of requests stopped: %v", l.err)
	}
	t.Logf("stream: %d requests acknowledged, %d calls failed and were retried: %v", len(l.acked), l.failures, l.errs)
	return l.acked
}

// fault is one fault the test injects and recovers from.
type fault struct {
	name   string
	inject func(t *testing.T)
}

// faults are the faults of one round: kill -9 a NATS node (another one
// each round), each service, and freeze a system for longer than its ack
// wait.
func (tp *topology) faults(l *load, c *clients, round int) []fault {
	restart := func(p *localPod) func(t *testing.T) {
		return func(t *testing.T) {
			p.proc.kill9(t)
			writer := p.w.name == "lethe-consent"
			if writer {
				// The writer is down: the replica answers on, as of the
				// last write it was asked about.
				c.replicaAnswers(t, tp.lastWrite, false)
			}
			// Down while the stream meets it: wait until the stream has
			// tried again (at most ten seconds), then bring it back as the
			// kubelet would.
			before := l.attemptCount()
			for deadline := time.Now().Add(10 * time.Second); l.attemptCount() < before+3 && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			if writer {
				t.Logf("consent writer down: the replica answered; its lag before the restart %s", tp.replicaLag(t))
			}
			p.proc.start(t)
			tp.waitReady(p)
		}
	}
	node := fmt.Sprintf("nats-%d", (round+1)%3)
	fs := []fault{{name: "kill -9 " + node + ", restart it", inject: restart(tp.byName[node])}}
	if tp.net != nil {
		away := fmt.Sprintf("nats-%d", (round+2)%3)
		fs = append(fs, fault{name: fmt.Sprintf("partition %s away for %s, heal it", away, *topologyPartition),
			inject: func(t *testing.T) { tp.partition(t, l, away) }})
	}
	for _, svc := range []string{"registry", "consent", "retention", "dsar"} {
		fs = append(fs, fault{name: "kill -9 lethe-" + svc + "-0, restart it", inject: restart(tp.byName["lethe-"+svc+"-0"])})
	}
	fs = append(fs, fault{name: "freeze mailer@clio for longer than its ack wait", inject: func(t *testing.T) {
		p := tp.systems["mailer"]
		p.signal(t, syscall.SIGSTOP)
		// The fault is its duration: events reach the frozen system and
		// wait beyond its ack wait, so NATS redelivers them.
		time.Sleep(systemAckWait + 2*time.Second)
		p.signal(t, syscall.SIGCONT)
	}})
	return fs
}

// partition cuts NATS node name off from everything for
// -topology.partition, and at least until the stream of requests has had
// two more acknowledged and the stream's leader among the other two, a
// leader for two Raft heartbeats at least (one a second; a connected
// replica answers each), has not heard from the node for as long: proof that the traffic on the route
// connections it had before the partition stopped too, not only new
// connections (which topologyNet.partition checks). Then it heals the
// node and waits for it to be ready. The node runs on meanwhile, unaware;
// the other two keep the stream's quorum, electing a leader among them
// if it was the leader. Whether it catches up is checked with the other
// faults' checks (the replicas agree at the end).
func (tp *topology) partition(t *testing.T, l *load, name string) {
	t.Helper()
	const unheard = 2 * time.Second
	p := tp.byName[name]
	var others []*localPod
	for _, o := range tp.natsPods() {
		if o != p {
			others = append(others, o)
		}
	}
	began, acked := time.Now(), l.ackedCount()
	tp.net.partition(t, name, mustAddr(t, p, "4222"))
	before := map[string]uint64{}
	for _, o := range others {
		s, err := streamStateOf(o)
		if err != nil {
			t.Fatalf("%s while %s is partitioned away: %v", o.name, name, err)
		}
		before[o.name] = s.LastSeq
	}
	var seen string
	for deadline := began.Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		seen = ""
		for _, o := range others {
			r, err := streamReplicaOf(o, contract.StreamName)
			if err != nil {
				t.Fatalf("%s while %s is partitioned away: %v", o.name, name, err)
			}
			if r.Cluster.Leader != o.name || r.Cluster.LeaderSince == nil || time.Since(*r.Cluster.LeaderSince) < unheard {
				continue
			}
			for _, rp := range r.Cluster.Replicas {
				switch {
				case rp.Name != name:
				case rp.Active >= unheard:
					seen = fmt.Sprintf("leader %s last heard from %s %s ago (lag %d)", o.name, name, rp.Active.Round(100*time.Millisecond), rp.Lag)
				case rp.Active == 0 && !rp.Current:
					// A leader elected during the partition that never
					// heard from it.
					seen = fmt.Sprintf("leader %s (since %s ago) never heard from %s (lag %d)", o.name,
						time.Since(*r.Cluster.LeaderSince).Round(100*time.Millisecond), name, rp.Lag)
				}
			}
		}
		if seen != "" && time.Since(began) >= *topologyPartition && l.ackedCount() >= acked+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s partitioned away for a minute: %d of 2 requests acknowledged meanwhile; the stream's leader among the others has not missed it for %s: %q",
				name, l.ackedCount()-acked, unheard, seen)
		}
	}
	var grew []string
	for _, o := range others {
		s, err := streamStateOf(o)
		if err != nil {
			t.Fatalf("%s while %s is partitioned away: %v", o.name, name, err)
		}
		grew = append(grew, fmt.Sprintf("%s %d→%d", o.name, before[o.name], s.LastSeq))
	}
	t.Logf("%s partitioned away for %s, %d requests acknowledged meanwhile; %s; the stream's last sequence on the others: %s",
		name, time.Since(began).Round(100*time.Millisecond), l.ackedCount()-acked, seen, strings.Join(grew, ", "))
	tp.net.heal(t, name)
	tp.waitReady(p)
}

// natsPods are the NATS cluster's pods, nats-0 to nats-2.
func (tp *topology) natsPods() []*localPod {
	var ps []*localPod
	for i := range 3 {
		ps = append(ps, tp.byName[fmt.Sprintf("nats-%d", i)])
	}
	return ps
}

// mustAddr is p's address for its container port port.
func mustAddr(t *testing.T, p *localPod, port string) string {
	t.Helper()
	a, ok := p.addr(port)
	if !ok {
		t.Fatalf("%s has no port %s", p.name, port)
	}
	return a
}

// processes are the topology's processes: pods, then systems.
func (tp *topology) processes() []*process {
	var ps []*process
	for _, p := range tp.pods {
		ps = append(ps, p.proc)
	}
	for _, s := range topologySystems {
		ps = append(ps, tp.systems[s])
	}
	return ps
}

// crashes counts the times a process exited without the test ending it,
// by process.
func (tp *topology) crashes() (int, map[string]int) {
	n, by := 0, map[string]int{}
	for _, p := range tp.processes() {
		if e := p.exitsOfItsOwn(); e > 0 {
			n += e
			by[p.name] = e
		}
	}
	return n, by
}

// waitReplicasAgree waits until each NATS node's own copy of the LETHE
// stream (its monitoring endpoint's /jsz) holds the same messages up to
// the same last sequence.
func (tp *topology) waitReplicasAgree(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		states := map[string]string{}
		var errs []error
		for _, p := range tp.natsPods() {
			state, err := streamStateOf(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
				continue
			}
			states[p.name] = state.String()
		}
		agree := len(errs) == 0 && states["nats-0"] == states["nats-1"] && states["nats-1"] == states["nats-2"]
		if agree {
			t.Logf("the three replicas of LETHE agree: %s", states["nats-0"])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replicas of LETHE disagree after %s: %v %v", within, states, errors.Join(errs...))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// streamReplica is one node's replica of the LETHE stream: its own state
// and what it knows of the stream's Raft group.
type streamReplica struct {
	State   streamInfo `json:"state"`
	Cluster struct {
		Leader      string     `json:"leader"`
		LeaderSince *time.Time `json:"leader_since"`
		// Replicas are the other replicas; the leader knows how far
		// behind each is, and when it last heard from each (active is
		// the time since; zero if never).
		Replicas []struct {
			Name    string        `json:"name"`
			Current bool          `json:"current"`
			Active  time.Duration `json:"active"`
			Lag     uint64        `json:"lag"`
		} `json:"replicas"`
	} `json:"cluster"`
}

// streamInfo is one node's own state of the LETHE stream.
type streamInfo struct {
	Msgs     uint64 `json:"messages"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Bytes    uint64 `json:"bytes"`
}

func (s streamInfo) String() string {
	return fmt.Sprintf("messages %d, sequences %d-%d, %d bytes", s.Msgs, s.FirstSeq, s.LastSeq, s.Bytes)
}

// streamStateOf is one node's own state of the LETHE stream, from its
// monitoring port.
func streamStateOf(p *localPod) (streamInfo, error) {
	r, err := streamReplicaOf(p, contract.StreamName)
	return r.State, err
}

// streamReplicaOf is one node's replica of the stream called name, from
// its monitoring port.
func streamReplicaOf(p *localPod, name string) (streamReplica, error) {
	addr, ok := p.addr("monitor")
	if !ok {
		return streamReplica{}, errors.New("no monitor port")
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/jsz?accounts=true&streams=true")
	if err != nil {
		return streamReplica{}, err
	}
	defer resp.Body.Close()
	var jsz struct {
		AccountDetails []struct {
			Streams []struct {
				Name string `json:"name"`
				streamReplica
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return streamReplica{}, err
	}
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == name {
				return s.streamReplica, nil
			}
		}
	}
	return streamReplica{}, fmt.Errorf("no replica of %s", name)
}

// soakSection is the section of docs/operations.md the soak rewrites.
var soakSection = regexp.MustCompile(`(?s)<!-- topology-soak:begin -->.*<!-- topology-soak:end -->`)

// soakCounts are what a soak run measured.
type soakCounts struct {
	rounds, requests, events, twice, faults, failedCalls int
	// crashes are the exits of a process's own, by process.
	crashes map[string]int
	took    time.Duration
	// partitioned: each round partitioned a NATS node away for
	// -topology.partition (the machine allowed network namespaces).
	partitioned bool
}

// writeSoakReport writes the soak's counts into path's topology soak
// section, between its markers.
func writeSoakReport(t *testing.T, path string, c soakCounts) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !soakSection.Match(b) {
		t.Fatalf("%s has no <!-- topology-soak:begin --> … <!-- topology-soak:end --> section", path)
	}
	crashes := "none"
	if len(c.crashes) > 0 {
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(c.crashes)) {
			parts = append(parts, fmt.Sprintf("%s %d", name, c.crashes[name]))
		}
		crashes = strings.Join(parts, ", ")
	}
	partition := "no partitions: network namespaces unavailable"
	if c.partitioned {
		partition = fmt.Sprintf("a NATS node partitioned away for %s each round", *topologyPartition)
	}
	body := fmt.Sprintf("<!-- topology-soak:begin -->\n"+
		"Last run (`make soak-topology`, %s, %d rounds of the fault sequence, %s, %s):\n\n"+
		"| requests acknowledged and completed | events applied by the systems | faults survived | calls that failed and were retried | requests a system applied twice | exits of a process's own, restarted |\n"+
		"|---|---|---|---|---|---|\n"+
		"| %d | %d | %d | %d | %d | %s |\n"+
		"<!-- topology-soak:end -->", time.Now().UTC().Format("2006-01-02"), c.rounds, partition, c.took.Round(time.Second),
		c.requests, c.events, c.faults, c.failedCalls, c.twice, crashes)
	if err := os.WriteFile(path, soakSection.ReplaceAll(b, []byte(body)), 0o644); err != nil {
		t.Fatal(err)
	}
}
