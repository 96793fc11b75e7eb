package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

const auditHelp = `
Usage: lethe audit verify --data FOLDER [--anchors stream|FILE [--since T] [--until T]] [flags]

Verifies the audit log of each service's bbolt file in a data folder
(lethe dev's --data, or a service's):

  - the hash chain: every entry's hash, its link to the one before, and
    the chain's head record; a change, removal or reordering of any entry
    is reported with the first entry concerned;
  - the chain against the rest of the file: the audit bucket must exist,
    the chain must end where the head copy in the file's meta bucket says
    it does, and a file holding state that only audited calls write
    (idempotency records, or the buckets its schema declares audited)
    must have a chain. A wiped or dropped audit log fails here.
  - with --anchors, the chain against the heads the services published
    outside the file (see docs/security.md, Audit log): the chain must
    reach every anchored entry and hold the anchored hash there, and every
    anchored file must be in the folder. A chain cut back together with
    its head records, or rewritten, after an anchor fails here.

--anchors stream reads the anchors from the platform stream (subjects
lethe._audit.head.<file>) at the context's NATS URL (--nats-url).
--anchors FILE reads them from a file of JSON lines, one anchor each:
the services' "audit chain head" log lines (JSON log format) are anchors
as they stand, e.g.
  grep '"msg":"audit chain head"' consent.log > anchors.jsonl

--since and --until (RFC 3339) keep only the anchors published in that
window. A file restored from a backup is behind every anchor published
after the backup was taken, and its chain continues differently from
them: verify it with --until the backup's time, and its later states
with --since the restore.

No API serves the audit log, so this reads the files: stop the platform
first, or verify a copy (bbolt allows one writer, and a running service
holds its file). When services run apart, gather their files (or copies)
into one folder to verify them against the stream's anchors.

Examples:
  lethe audit verify --data ./data
  lethe audit verify --data ./data --anchors stream
  lethe audit verify --data ./backup --anchors anchors.jsonl

Exit codes: 0 every audit log intact, 1 one is broken, wiped, cut short or
behind its anchors, 2 usage (or an unreadable anchors file), 4 a file or
the stream could not be read.
`

func runAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		return subcommand("audit", auditHelp, nil, args, stdout, stderr)
	}
	var data, anchorsFrom, sinceArg, untilArg string
	var conn connFlags
	fs := newFlagSet("audit verify", auditHelp, stderr)
	conn.register(fs)
	fs.StringVar(&data, "data", "./data", "the data folder")
	fs.StringVar(&anchorsFrom, "anchors", "", `check the chains against published heads: "stream", or a file of JSON lines`)
	fs.StringVar(&sinceArg, "since", "", "with --anchors: only anchors published at or after this time (RFC 3339)")
	fs.StringVar(&untilArg, "until", "", "with --anchors: only anchors published at or before this time (RFC 3339)")
	if code := parse(fs, args[1:]); code >= 0 {
		return code
	}
	window, ok := anchorWindow(sinceArg, untilArg, anchorsFrom, stderr)
	if !ok {
		return exitUsage
	}
	files, _ := filepath.Glob(filepath.Join(data, "*.db"))
	if len(files) == 0 {
		fmt.Fprintf(stderr, "lethe audit verify: no *.db files in %s\n", data)
		return exitUsage
	}
	var anchors map[string][]audit.Anchor
	if anchorsFrom != "" {
		var code int
		if anchors, code = loadAnchors(anchorsFrom, window, &conn, stderr); code != exitOK {
			return code
		}
	}

	code := exitOK
	t := newTable(stdout, "FILE", "ENTRIES", "ANCHORED", "RESULT")
	seen := map[string]bool{}
	for _, path := range files {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		if err != nil {
			t.flush()
			fmt.Fprintf(stderr, "lethe audit verify: %s: %v (is the platform still running?)\n", path, err)
			return exitPlatform
		}
		rep, anchored, err := verifyAuditDB(db, anchors, seen)
		_ = db.Close()
		// A broken chain decides the exit code over a file that could not
		// be read.
		switch c := auditRow(t, filepath.Base(path), rep, anchored, err); {
		case c == exitNo:
			code = exitNo
		case c != exitOK && code == exitOK:
			code = c
		}
	}
	if missingAuditFiles(t, anchors, seen, data) {
		code = exitNo
	}
	t.flush()
	return code
}

// anchorWindow parses --since and --until, either of which may be empty
// for an open bound; both need --anchors. It reports false, having said
// why, when they are wrong.
func anchorWindow(sinceArg, untilArg, anchorsFrom string, stderr io.Writer) ([2]time.Time, bool) {
	var window [2]time.Time
	for i, arg := range []string{sinceArg, untilArg} {
		if arg == "" {
			continue
		}
		var err error
		if window[i], err = time.Parse(time.RFC3339Nano, arg); err != nil || anchorsFrom == "" {
			fmt.Fprintf(stderr, "lethe audit verify: --since and --until take an RFC 3339 time and need --anchors (%q)\n", arg)
			return window, false
		}
	}
	return window, true
}

// verifyAuditDB verifies the audit chain of one service's file and, when
// anchors are given, that it holds each of that service's anchors. It
// marks the service seen, and returns the last anchor's entry ("-" for
// none).
func verifyAuditDB(db *bolt.DB, anchors map[string][]audit.Anchor, seen map[string]bool) (audit.Report, string, error) {
	var rep audit.Report
	anchored := "-"
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		rep, err = audit.VerifyFileTx(tx)
		// A broken file is reported as such, not also as missing.
		seen[rep.Service] = true
		if err != nil || anchors == nil {
			return err
		}
		list := anchors[rep.Service]
		if len(list) > 0 {
			anchored = fmt.Sprint(list[len(list)-1].Seq)
		}
		for _, a := range list {
			if err := audit.CheckAnchorTx(tx, a); err != nil {
				return err
			}
		}
		return nil
	})
	return rep, anchored, err
}

// auditRow writes a file's result and returns its exit code: exitNo for a
// broken chain, exitPlatform for a file that could not be read.
func auditRow(t *table, file string, rep audit.Report, anchored string, err error) int {
	var ve *hashchain.VerifyError
	var ie *audit.IntegrityError
	switch {
	case errors.As(err, &ve), errors.As(err, &ie):
		t.row(file, rep.Entries, anchored, "BROKEN: "+err.Error())
		return exitNo
	case err != nil:
		t.row(file, "-", anchored, "error: "+err.Error())
		return exitPlatform
	}
	t.row(file, rep.Entries, anchored, "intact")
	return exitOK
}

// missingAuditFiles writes a row for each anchored service with no file
// in data, whose file was removed with its chain, and reports whether
// there was one.
func missingAuditFiles(t *table, anchors map[string][]audit.Anchor, seen map[string]bool, data string) bool {
	missing := false
	for _, file := range slices.Sorted(mapKeys(anchors)) {
		if seen[file] {
			continue
		}
		last := anchors[file][len(anchors[file])-1]
		t.row(file+".db", "-", last.Seq, fmt.Sprintf("MISSING: anchored at entry %d on %s, no file of it in %s",
			last.Seq, last.Time.Format(time.RFC3339), data))
		missing = true
	}
	return missing
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// loadAnchors reads the anchors from the stream or a file, keeps those in
// the window (a zero bound is open), and returns them by file in order of
// seq.
func loadAnchors(from string, window [2]time.Time, conn *connFlags, stderr io.Writer) (map[string][]audit.Anchor, int) {
	var list []audit.Anchor
	if from == "stream" {
		var err error
		if list, err = streamAnchors(conn); err != nil {
			fmt.Fprintln(stderr, "lethe audit verify: anchors from the stream:", err)
			return nil, exitPlatform
		}
	} else {
		var err error
		if list, err = fileAnchors(from); err != nil {
			fmt.Fprintln(stderr, "lethe audit verify: --anchors:", err)
			return nil, exitUsage
		}
	}
	byFile := map[string][]audit.Anchor{}
	for _, a := range list {
		if (!window[0].IsZero() && a.Time.Before(window[0])) || (!window[1].IsZero() && a.Time.After(window[1])) {
			continue
		}
		byFile[a.File] = append(byFile[a.File], a)
	}
	for _, l := range byFile {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Seq < l[j].Seq })
	}
	return byFile, exitOK
}

// fileAnchors reads a file of anchors, one JSON object a line; blank lines
// are skipped, anything else that is not an anchor is an error.
func fileAnchors(path string) ([]audit.Anchor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var list []audit.Anchor
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		a, err := audit.DecodeAnchor(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		list = append(list, a)
	}
	return list, sc.Err()
}

// streamAnchors reads every anchor the platform stream holds.
func streamAnchors(conn *connFlags) ([]audit.Anchor, error) {
	cfg, err := conn.resolve()
	if err != nil {
		return nil, err
	}
	nc, err := dialNATS(cfg, "lethe audit verify")
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.NATS, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{audit.AnchorSubjects}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	var list []audit.Anchor
	for pending := info.NumPending; pending > 0; {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return nil, err
		}
		a, err := audit.DecodeAnchor(msg.Data())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", msg.Subject(), err)
		}
		list = append(list, a)
		meta, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		pending = meta.NumPending
	}
	return list, nil
}
