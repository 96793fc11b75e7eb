package wirefuzz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// Config is a fuzzing run.
type Config struct {
	// Conn reaches the services.
	Conn *grpc.ClientConn
	// Methods are the methods to fuzz (see Methods).
	Methods []*Method
	// Tenant is the tenant the base requests name; it should exist.
	Tenant string
	// Seed makes the run repeatable: the same seed sends the same inputs.
	Seed uint64
	// Inputs is how many inputs to send after the base requests.
	Inputs int
	// Timeout bounds a unary or client-streaming call; 20 seconds when
	// zero. A call that runs out of it misbehaves (bad-status).
	Timeout time.Duration
	// Heavy, when positive, bounds the inputs of each heavy kind (see
	// HeavyKinds); a slot past the bound goes to the method's next kind.
	// A bounded run keeps its time so; a long run sets none.
	Heavy int
	// Healthy returns an error when the platform is no longer healthy:
	// the process exited, or the named service (the one just called) no
	// longer answers health SERVING.
	Healthy func(ctx context.Context, service string) error
	// Snapshot reads the store files' state (see Stores).
	Snapshot func() (State, error)
	// ServerLog, when set, returns what the server logged since its
	// argument, an offset it returned before, and the new offset: the
	// report quotes it for a bad status.
	ServerLog func(from int) (string, int)
	// Progress, when set, receives a line every so often.
	Progress io.Writer
	// Now is the time base requests' timestamps are set around.
	Now time.Time
}

const (
	defaultTimeout = 20 * time.Second
	// streamOpen is how long a server stream may stay open silently before
	// it counts as an accepted subscription.
	streamOpen = 500 * time.Millisecond
	// quietFor and quietWithin bound the wait for background writes (the
	// outbox relay, event consumers) to settle after an accepted call.
	quietFor    = 100 * time.Millisecond
	quietWithin = 5 * time.Second
)

// Run sends every method's base request, then cfg.Inputs inputs, and
// returns what happened. It stops early, with an error, only when the
// platform is unhealthy (every later input would fail for that reason) or
// the store cannot be read; misbehaviours are in the report, not errors.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	b, err := newBuilder(cfg.Tenant, cfg.Now)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	r := &runner{cfg: cfg, report: newReport(cfg.Seed), baseValid: map[string]bool{}, gens: map[string]*generator{}}
	gens := make([]*generator, len(cfg.Methods))
	for i, m := range cfg.Methods {
		base := b.base(m.Input)
		gens[i] = &generator{rng: rng, method: m, base: base, targets: targets(base.ProtoReflect())}
		r.gens[m.FullName] = gens[i]
	}
	start := time.Now()
	if err := r.bases(ctx, b, gens); err != nil {
		return r.done(start), err
	}
	if err := r.inputs(ctx, gens, rng); err != nil {
		return r.done(start), err
	}
	return r.done(start), nil
}

// bases sends each method's base request. While the server refuses one as
// InvalidArgument, the fields it names are cleared or given candidate
// values, keeping a change that leaves fewer violations (the services'
// own rules, beyond protovalidate's, are only learned so). A last pass
// sends them again, now that the first created what later ones refer to
// (the tenant's purposes, say), and records how each base fares.
func (r *runner) bases(ctx context.Context, b *builder, gens []*generator) error {
	for _, g := range gens {
		out, err := r.send(ctx, g.input(KindBase))
		if err != nil {
			return err
		}
		if err := r.repair(ctx, b, g, out); err != nil {
			return err
		}
	}
	for _, g := range gens {
		out, err := r.send(ctx, g.input(KindBase))
		if err != nil {
			return err
		}
		r.baseValid[g.method.FullName] = out.Code != codes.InvalidArgument
		r.report.Bases = append(r.report.Bases, BaseOutcome{Method: g.method.Short(), Code: out.Code, Message: out.Message})
	}
	return nil
}

// inputs sends cfg.Inputs inputs. The schedule takes the kinds in turn,
// and for each kind the next method that has a field it needs, so a few
// hundred inputs cover every kind evenly and every method. A heavy kind
// past its bound gives its turn to the next kind. Each kind starts at a
// method drawn from the seed, so that the few heavy inputs of a bounded
// run fall on different methods from one seed to the next.
func (r *runner) inputs(ctx context.Context, gens []*generator, rng *rand.Rand) error {
	cfg := r.cfg
	next := map[Kind]int{}
	for _, k := range Kinds {
		next[k] = rng.IntN(len(gens))
	}
	sent := map[Kind]int{}
	for n := range cfg.Inputs {
		k := Kinds[n%len(Kinds)]
		for j := 1; cfg.Heavy > 0 && HeavyKinds[k] && sent[k] >= cfg.Heavy && j < len(Kinds); j++ {
			k = Kinds[(n+j)%len(Kinds)]
		}
		g := nextApplicable(gens, next, k)
		sent[k]++
		if _, err := r.send(ctx, g.input(k)); err != nil {
			return err
		}
		if cfg.Progress != nil && (n+1)%250 == 0 {
			fmt.Fprintf(cfg.Progress, "wirefuzz: %d of %d inputs, %d misbehaved\n", n+1, cfg.Inputs, len(r.report.Failures))
		}
	}
	return nil
}

// nextApplicable returns the next generator, in turn from next[k], that
// can make kind k (the last tried if none can), advancing next[k].
func nextApplicable(gens []*generator, next map[Kind]int, k Kind) *generator {
	var g *generator
	for range gens {
		g = gens[next[k]%len(gens)]
		next[k]++
		if g.applicable(k) {
			break
		}
	}
	return g
}

// repairAttempts bounds the calls spent repairing one base.
const repairAttempts = 40

// repair changes the fields a refused base's violations name, one at a
// time, and keeps a change after which the server names fewer violations.
func (r *runner) repair(ctx context.Context, b *builder, g *generator, out Outcome) error {
	for attempts := 0; out.Code == codes.InvalidArgument && attempts < repairAttempts; {
		improved := false
		for _, v := range out.Violations {
			if v.Field == "" {
				continue
			}
			trial := proto.Clone(g.base)
			s, ok := slotAt(trial.ProtoReflect(), v.Field)
			if !ok {
				continue
			}
			// Closures over s, which each failed try points at a fresh clone.
			tries := []func(){func() { s.clear() }}
			for _, c := range b.candidates(s) {
				tries = append(tries, func() { s.set(c) })
			}
			for _, try := range tries {
				if attempts++; attempts > repairAttempts {
					g.targets = targets(g.base.ProtoReflect())
					return nil
				}
				try()
				if len(b.violations(trial)) > 0 {
					continue // the change breaks protovalidate's rules
				}
				saved := g.base
				g.base = trial
				next, err := r.send(ctx, g.input(KindBase))
				if err != nil {
					return err
				}
				if next.Code != codes.InvalidArgument || len(next.Violations) < len(out.Violations) {
					out, improved = next, true
					break
				}
				g.base = saved
				trial = proto.Clone(saved)
				if s, ok = slotAt(trial.ProtoReflect(), v.Field); !ok {
					break
				}
			}
			if improved {
				break
			}
		}
		if !improved {
			break
		}
	}
	g.targets = targets(g.base.ProtoReflect())
	return nil
}

type runner struct {
	cfg       Config
	report    *Report
	baseValid map[string]bool
	gens      map[string]*generator // by method
	logAt     int
}

func (r *runner) done(start time.Time) *Report {
	r.report.Elapsed = time.Since(start)
	return r.report
}

// send sends one input, checks it and records it.
func (r *runner) send(ctx context.Context, in *Input) (Outcome, error) {
	if r.cfg.ServerLog != nil {
		_, r.logAt = r.cfg.ServerLog(r.logAt)
	}
	// A refused call can write only through its own service's files:
	// another service's writes (a sweep, an event consumer) are not its.
	own := in.Method.Store()
	before, err := r.snapshot(own)
	if err != nil {
		return Outcome{}, err
	}
	began := time.Now()
	out := r.call(ctx, in)
	took := time.Since(began)
	after, err := r.snapshot(own)
	if err != nil {
		return out, err
	}
	bad := check(in, out, in.Kind == KindBase || r.baseValid[in.Method.FullName])
	if in.Kind != KindBase && slices.ContainsFunc(bad, func(m Misbehaviour) bool { return m.Check == CheckWrongField }) {
		if bad, err = r.stateful(ctx, in, out, bad); err != nil {
			return out, err
		}
	}
	healthErr := r.cfg.Healthy(ctx, in.Method.Service())
	if healthErr != nil {
		bad = append(bad, Misbehaviour{Check: CheckUnhealthy, Detail: healthErr.Error()})
	}
	if out.Refused() && !before.Equal(after) && healthErr == nil {
		wrote, err := r.recheckWrite(ctx, in, own, before.Diff(after))
		if err != nil {
			return out, err
		}
		bad = append(bad, wrote...)
	}
	r.attachServerLog(in, bad)
	r.report.add(in, out, bad, took)
	if healthErr != nil {
		return out, fmt.Errorf("platform unhealthy after %s %s: %w", in.Method.Short(), in.Kind, healthErr)
	}
	if out.Accepted() && !in.Method.ReadOnly {
		return out, r.quiet(ctx)
	}
	return out, nil
}

// recheckWrite decides whether a refused call that was seen to write
// (diff, in the files of store own) did: a background write (the relay,
// a consumer, a sweep) may have landed during the call, so it waits for
// quiet and sends the input again. It returns the misbehaviour when the
// second refusal writes too.
func (r *runner) recheckWrite(ctx context.Context, in *Input, own, diff string) ([]Misbehaviour, error) {
	r.report.Rechecked++
	if err := r.quiet(ctx); err != nil {
		return nil, err
	}
	again, err := r.snapshot(own)
	if err != nil {
		return nil, err
	}
	out := r.call(ctx, in)
	after, err := r.snapshot(own)
	if err != nil {
		return nil, err
	}
	if out.Refused() && !again.Equal(after) {
		return []Misbehaviour{{Check: CheckWrote, Detail: fmt.Sprintf("%s; again: %s", diff, again.Diff(after))}}, nil
	}
	return nil, nil
}

// attachServerLog adds to a wrong status or an unhealthy platform the
// server's log lines about the input's method since the last input.
func (r *runner) attachServerLog(in *Input, bad []Misbehaviour) {
	if len(bad) == 0 || r.cfg.ServerLog == nil {
		return
	}
	var log string
	log, r.logAt = r.cfg.ServerLog(r.logAt)
	for i := range bad {
		if bad[i].Check == CheckStatus || bad[i].Check == CheckUnhealthy {
			bad[i].Detail += serverLines(log, in.Method.FullName)
		}
	}
}

// serverLines are the lines of the server's log about method, or that
// report a panic, shortened.
func serverLines(log, method string) string {
	var keep []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, method) || strings.Contains(line, "panic") {
			if len(line) > 600 {
				line = line[:600] + "…"
			}
			keep = append(keep, line)
		}
	}
	if len(keep) == 0 {
		return ""
	}
	return "\n    server: " + strings.Join(keep, "\n    server: ")
}

// stateful drops a wrong-field finding when the base request itself is
// now refused for the field the input's refusal names: state changed
// since the base passed (an earlier call registered the system it
// registers, say), and the refusal is not the changed field's.
func (r *runner) stateful(ctx context.Context, in *Input, out Outcome, bad []Misbehaviour) ([]Misbehaviour, error) {
	base := r.call(ctx, r.gens[in.Method.FullName].input(KindBase))
	if base.Accepted() && !in.Method.ReadOnly {
		if err := r.quiet(ctx); err != nil {
			return bad, err
		}
	}
	if base.Code != codes.InvalidArgument {
		return bad, nil
	}
	for _, v := range out.Violations {
		if v.Field != "" && namesField(base, v.Field) {
			return slices.DeleteFunc(bad, func(m Misbehaviour) bool { return m.Check == CheckWrongField }), nil
		}
	}
	return bad, nil
}

func (r *runner) snapshot(prefix string) (State, error) {
	s, err := r.cfg.Snapshot()
	return s.Of(prefix), err
}

// quiet waits until no store file has changed for quietFor.
func (r *runner) quiet(ctx context.Context) error {
	last, err := r.cfg.Snapshot()
	if err != nil {
		return err
	}
	since, deadline := time.Now(), time.Now().Add(quietWithin)
	for time.Since(since) < quietFor && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		s, err := r.cfg.Snapshot()
		if err != nil {
			return err
		}
		if !s.Equal(last) {
			last, since = s, time.Now()
		}
	}
	return nil
}

// call sends the input's bytes and returns the outcome.
func (r *runner) call(ctx context.Context, in *Input) Outcome {
	m := in.Method
	req := in.Bytes
	var resp []byte
	if !m.ClientStreams && !m.ServerStreams {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
		err := r.cfg.Conn.Invoke(ctx, m.FullName, &req, &resp, Raw)
		o := outcomeOf(err)
		if err == nil {
			o.Response = resp
		}
		return o
	}
	timeout := r.cfg.Timeout
	if m.ServerStreams {
		timeout = streamOpen
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: m.FullName, ClientStreams: m.ClientStreams, ServerStreams: m.ServerStreams}
	stream, err := r.cfg.Conn.NewStream(ctx, desc, m.FullName, Raw)
	if err != nil {
		return outcomeOf(err)
	}
	if err := stream.SendMsg(&req); err != nil && !errors.Is(err, io.EOF) {
		return outcomeOf(err)
	}
	if err := stream.CloseSend(); err != nil {
		return outcomeOf(err)
	}
	err = stream.RecvMsg(&resp)
	if err == nil {
		return Outcome{Code: codes.OK, Response: resp}
	}
	if m.ServerStreams && errors.Is(err, io.EOF) {
		return Outcome{Code: codes.OK} // an empty, finished stream
	}
	o := outcomeOf(err)
	if m.ServerStreams && o.Code == codes.DeadlineExceeded && ctx.Err() != nil {
		o.Open = true
	}
	return o
}

// Report is what a run found.
type Report struct {
	Seed uint64
	// Kinds counts the inputs of each kind.
	Kinds map[Kind]*KindCount
	// Failures are the misbehaving inputs, in the order sent.
	Failures []Failure
	// Bases are how the base requests fared on their second sending: a
	// base refused as InvalidArgument lets its mutations be checked only
	// for naming some field; NotFound or FailedPrecondition means its
	// mutations stop at the handler's own checks.
	Bases []BaseOutcome
	// Rechecked counts refused inputs sent twice because a store file
	// changed during the first call.
	Rechecked int
	Elapsed   time.Duration
}

// BaseOutcome is how one method's base request fared.
type BaseOutcome struct {
	Method  string
	Code    codes.Code
	Message string
}

// KindCount counts one kind's inputs.
type KindCount struct {
	Tried, Accepted, Refused, Undecodable, Misbehaved int
	// Time is the calls' total time; Slowest the longest call's, to
	// SlowestMethod.
	Time, Slowest time.Duration
	SlowestMethod string
	// ByCheck counts the misbehaving inputs by broken property.
	ByCheck map[Check]int
}

// Failure is one input that broke one or more properties.
type Failure struct {
	Method string
	Kind   Kind
	Field  string
	Value  string
	Code   codes.Code
	Checks []Misbehaviour
}

func newReport(seed uint64) *Report {
	r := &Report{Seed: seed, Kinds: map[Kind]*KindCount{}}
	for _, k := range append([]Kind{KindBase}, Kinds...) {
		r.Kinds[k] = &KindCount{ByCheck: map[Check]int{}}
	}
	return r
}

func (r *Report) add(in *Input, out Outcome, bad []Misbehaviour, took time.Duration) {
	c := r.Kinds[in.Kind]
	c.Tried++
	c.Time += took
	if took > c.Slowest {
		c.Slowest, c.SlowestMethod = took, in.Method.Short()
	}
	if out.Accepted() {
		c.Accepted++
	} else {
		c.Refused++
	}
	if !in.Decodable {
		c.Undecodable++
	}
	if len(bad) == 0 {
		return
	}
	c.Misbehaved++
	seen := map[Check]bool{}
	for _, b := range bad {
		if !seen[b.Check] {
			c.ByCheck[b.Check]++
			seen[b.Check] = true
		}
	}
	r.Failures = append(r.Failures, Failure{
		Method: in.Method.Short(), Kind: in.Kind, Field: in.Field, Value: in.Value, Code: out.Code, Checks: bad,
	})
}

// Tried is the number of inputs sent.
func (r *Report) Tried() int {
	n := 0
	for _, c := range r.Kinds {
		n += c.Tried
	}
	return n
}

// Table is the counts by kind as a Markdown table.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| kind | tried | accepted | refused | undecodable | misbehaved | by property | time | slowest call |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---|---:|---|\n")
	total := KindCount{}
	for _, k := range append([]Kind{KindBase}, Kinds...) {
		c := r.Kinds[k]
		var by []string
		for _, ch := range slices.Sorted(maps.Keys(c.ByCheck)) {
			by = append(by, fmt.Sprintf("%s %d", ch, c.ByCheck[ch]))
		}
		slowest := "-"
		if c.Tried > 0 {
			slowest = fmt.Sprintf("%s %s", c.Slowest.Round(time.Millisecond), c.SlowestMethod)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %s | %s | %s |\n", k, c.Tried, c.Accepted, c.Refused, c.Undecodable, c.Misbehaved,
			strings.Join(by, ", "), c.Time.Round(100*time.Millisecond), slowest)
		total.Time += c.Time
		total.Tried += c.Tried
		total.Accepted += c.Accepted
		total.Refused += c.Refused
		total.Undecodable += c.Undecodable
		total.Misbehaved += c.Misbehaved
	}
	fmt.Fprintf(&b, "| all | %d | %d | %d | %d | %d | | %s | |\n", total.Tried, total.Accepted, total.Refused, total.Undecodable, total.Misbehaved,
		total.Time.Round(100*time.Millisecond))
	return b.String()
}

// Group is the failures of one property, kind and method.
type Group struct {
	Check   Check
	Kind    Kind
	Method  string
	Count   int
	Example Failure
	Detail  string
}

// Groups gathers the failures by property, kind and method, each with its
// first example, sorted.
func (r *Report) Groups() []Group {
	index := map[[3]string]int{}
	var out []Group
	for _, f := range r.Failures {
		for _, b := range f.Checks {
			key := [3]string{string(b.Check), string(f.Kind), f.Method}
			if i, ok := index[key]; ok {
				out[i].Count++
				continue
			}
			index[key] = len(out)
			out = append(out, Group{Check: b.Check, Kind: f.Kind, Method: f.Method, Count: 1, Example: f, Detail: b.Detail})
		}
	}
	slices.SortFunc(out, func(a, b Group) int {
		return strings.Compare(string(a.Check)+"\x00"+string(a.Kind)+"\x00"+a.Method, string(b.Check)+"\x00"+string(b.Kind)+"\x00"+b.Method)
	})
	return out
}

func (g Group) String() string {
	field := g.Example.Field
	if field == "" {
		field = "-"
	}
	return fmt.Sprintf("%s / %s / %s: %d× (e.g. field %s, %s): %s", g.Check, g.Kind, g.Method, g.Count, field, g.Example.Value, g.Detail)
}
