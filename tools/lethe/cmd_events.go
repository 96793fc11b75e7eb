package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

const eventsHelp = `
Usage: lethe events tail [flags]

Follows the platform's event stream (JetStream stream LETHE) with an
ephemeral consumer and prints each event decoded: directives (erasure,
rectification, access requested), limits (consent withdrawn, objection,
restriction), configuration events, and the outcomes systems report.
Nothing is acknowledged or changed: tailing never takes an event from a
system.

Examples:
  lethe events tail                         # everything new, all tenants
  lethe events tail --tenant clio --since 1h
  lethe events tail --tenant cleura --all -o json | jq .
  lethe events tail --count 5               # stop after five events

The NATS URL comes from --nats-url or the context (default lethe dev's
nats://127.0.0.1:4222).
`

func runEvents(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "tail" {
		return subcommand("events", eventsHelp, nil, args, stdout, stderr)
	}
	var conn connFlags
	var tenant string
	var since time.Duration
	var all bool
	var count int
	fs := newFlagSet("events tail", eventsHelp, stderr)
	conn.register(fs)
	conn.registerOutput(fs)
	fs.StringVar(&tenant, "tenant", "", "only this tenant's events (default all)")
	fs.DurationVar(&since, "since", 0, "start this long ago (default: only new events)")
	fs.BoolVar(&all, "all", false, "start from the first event the stream keeps")
	fs.IntVar(&count, "count", 0, "stop after this many events (default: follow until Ctrl-C)")
	if code := parse(fs, args[1:]); code >= 0 {
		return code
	}
	cfg, err := conn.resolve()
	if err != nil {
		fmt.Fprintln(stderr, "lethe events tail:", err)
		return exitUsage
	}
	opts := []nats.Option{nats.Name("lethe events tail")}
	if cfg.NATSCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	}
	if cfg.TLS != nil {
		if cfg.TLS.CA != "" {
			opts = append(opts, nats.RootCAs(cfg.TLS.CA))
		}
		if cfg.TLS.Cert != "" {
			opts = append(opts, nats.ClientCert(cfg.TLS.Cert, cfg.TLS.Key))
		}
	}
	nc, err := nats.Connect(cfg.NATS, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "lethe events tail: connect to %s: %v\n", cfg.NATS, err)
		return exitPlatform
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(stderr, "lethe events tail:", err)
		return exitPlatform
	}
	ctx, stop := signalContext()
	defer stop()

	filter := contract.AllSubjects
	if tenant != "" {
		filter = contract.SubjectRoot + "." + tenant + ".>"
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case all:
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
	case since > 0:
		start := time.Now().Add(-since)
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, cc)
	if err != nil {
		fmt.Fprintln(stderr, "lethe events tail:", err)
		return exitPlatform
	}
	seen := 0
	for count == 0 || seen < count {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return exitOK
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			fmt.Fprintln(stderr, "lethe events tail:", err)
			return exitPlatform
		}
		printEvent(stdout, msg, conn.output == "json")
		seen++
	}
	return exitOK
}

// printEvent decodes an event or an outcome by its subject.
func printEvent(w io.Writer, msg jetstream.Msg, asJSON bool) {
	var body proto.Message = &eventsv1.Event{}
	if _, _, ok := contract.ParseOutcomeSubject(msg.Subject()); ok {
		body = &eventsv1.Outcome{}
		if msg.Headers().Get(contract.HeaderType) == contract.OutcomeBatchType {
			body = &eventsv1.OutcomeBatch{}
		}
	}
	decodeErr := proto.Unmarshal(msg.Data(), body)
	h := msg.Headers()
	if asJSON {
		payload := []byte("null")
		if decodeErr == nil {
			payload, _ = protojson.Marshal(body)
		}
		fmt.Fprintf(w, "{\"subject\":%q,\"ceId\":%q,\"ceType\":%q,\"ceSubject\":%q,\"ceTime\":%q,\"payload\":%s}\n",
			msg.Subject(), h.Get(contract.HeaderID), h.Get(contract.HeaderType), h.Get(contract.HeaderSubject), h.Get(contract.HeaderTime), payload)
		return
	}
	summary := "(undecodable payload)"
	if decodeErr == nil {
		summary = protojson.MarshalOptions{}.Format(body)
		summary = strings.Join(strings.Fields(summary), " ")
	}
	fmt.Fprintf(w, "%s  %s  %s  %s\n", orDash(h.Get(contract.HeaderTime)), msg.Subject(), orDash(h.Get(contract.HeaderSubject)), summary)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const auditHelp = `
Usage: lethe audit verify --data FOLDER

Verifies the hash-chained audit log of each service's bbolt file in a data
folder (lethe dev's --data, or a service's): every entry's hash, its link
to the one before, and the head record. A change, removal or reordering
of any entry is reported with the first entry concerned.

No API serves the audit log, so this reads the files: stop the platform
first, or verify a copy (bbolt allows one writer, and a running service
holds its file).

Example:
  lethe audit verify --data ./data

Exit codes: 0 every chain intact, 1 a chain is broken, 2 usage, 4 a file
could not be read.
`

func runAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		return subcommand("audit", auditHelp, nil, args, stdout, stderr)
	}
	var data string
	fs := newFlagSet("audit verify", auditHelp, stderr)
	fs.StringVar(&data, "data", "./data", "the data folder")
	if code := parse(fs, args[1:]); code >= 0 {
		return code
	}
	files, _ := filepath.Glob(filepath.Join(data, "*.db"))
	if len(files) == 0 {
		fmt.Fprintf(stderr, "lethe audit verify: no *.db files in %s\n", data)
		return exitUsage
	}
	code := exitOK
	chain := hashchain.New(store.BucketAudit)
	t := newTable(stdout, "FILE", "ENTRIES", "RESULT")
	for _, path := range files {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		if err != nil {
			t.flush()
			fmt.Fprintf(stderr, "lethe audit verify: %s: %v (is the platform still running?)\n", path, err)
			return exitPlatform
		}
		var n uint64
		err = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(store.BucketAudit) == nil {
				return errNoAudit
			}
			var err error
			n, err = chain.VerifyTx(tx)
			return err
		})
		_ = db.Close()
		var ve *hashchain.VerifyError
		switch {
		case errors.Is(err, errNoAudit):
			t.row(filepath.Base(path), "-", "no audit log")
		case errors.As(err, &ve):
			t.row(filepath.Base(path), n, "BROKEN: "+ve.Error())
			code = exitNo
		case err != nil:
			t.row(filepath.Base(path), "-", "error: "+err.Error())
			code = exitPlatform
		default:
			t.row(filepath.Base(path), n, "intact")
		}
	}
	t.flush()
	return code
}

var errNoAudit = errors.New("no audit bucket")
