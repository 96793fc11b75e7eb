package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// The README's walk-through "Privacy as code: five companies, end to end"
// is what a newcomer types first. TestREADMEDemo runs every `./lethe`
// command of its shell blocks, in order, through run() against a fresh
// `lethe dev`, so that a README which drifts from the command (a renamed
// flag, an id the reader must copy by hand, an exit code that changed)
// fails here rather than in a reader's terminal.
//
// It runs on its own platform, not the conformance suite's shared one:
// the walk-through applies all five example tenants and expects apply to
// create them and diff to find nothing left, while the conformance tests
// apply each tenant afresh and then change some (a material notice
// version of Clio's), so neither could run after the other on one
// platform.

// readmeSection is the README section whose shell blocks the test runs.
const readmeSection = "## Privacy as code"

func TestREADMEDemo(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := shellBlocks(t, string(readme), readmeSection)

	bin := buildBinaries(t, ".")["."]
	addr, nats, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	proc := startProcess(t, bin, "dev", "--data", t.TempDir(), "--addr", addr, "--nats-addr", nats, "--metrics-addr", "", "--http-addr", httpAddr, "--public-addr", "", "--replica-addr", "off")
	defer proc.stop(t)
	waitServing(t, addr, healthNames, proc)
	// The reader's context: lethe dev's addresses, as the default would be.
	config := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(config, fmt.Appendf(nil, "currentContext: dev\ncontexts:\n  - name: dev\n    address: %s\n    nats: nats://%s\n", addr, nats), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LETHE_CONFIG", config)
	// The README's paths are the repository root's.
	t.Chdir("../..")

	sh := &readmeShell{t: t, vars: map[string]string{}, httpAddr: httpAddr}
	for _, b := range blocks {
		sh.runBlock(b)
	}
	if sh.curls < 3 {
		t.Fatalf("ran %d curl commands of the README, want its three HTTP/JSON examples", sh.curls)
	}
	if sh.ran < 10 {
		t.Fatalf("ran %d lethe commands of the README; its walk-through has more — did the section or its blocks move?", sh.ran)
	}

	// Clevio's connector systems wait for lethe-connect, which plain
	// lethe dev does not host: their tasks are open, answered by no one.
	t.Run("connector tasks wait for lethe-connect", func(t *testing.T) {
		want := map[string]string{"facebook-ads": "TASK_STATE_OPEN", "hotjar": "TASK_STATE_OPEN"}
		// The fan-out follows the verification; wait for its tasks.
		eventually.Succeeds(t, "Clevio's connector tasks", func() error {
			var resp struct {
				Request struct {
					State  string `json:"state"`
					Result struct {
						Tasks []struct {
							SystemID   string `json:"systemId"`
							AnswerMode string `json:"answerMode"`
							State      string `json:"state"`
						} `json:"tasks"`
					} `json:"result"`
				} `json:"request"`
			}
			out := runOK(t, "dsar", "show", "--tenant", "clevio", "--id", sh.vars["CID"], "-o", "json")
			if err := json.Unmarshal([]byte(out), &resp); err != nil {
				return fmt.Errorf("dsar show -o json: %w\n%s", err, out)
			}
			connectors := map[string]string{}
			for _, task := range resp.Request.Result.Tasks {
				if task.AnswerMode == "ANSWER_MODE_CONNECTOR" {
					connectors[task.SystemID] = task.State
				}
			}
			if !maps.Equal(connectors, want) || strings.Contains(resp.Request.State, "COMPLETED") {
				return fmt.Errorf("request %s, connector tasks %v; want it open with %v", resp.Request.State, connectors, want)
			}
			return nil
		})
	})

	// Every list pages on the client (listAll): with one item a page, a
	// listing of the walk-through's data reads the same as in one page.
	t.Run("lists page on the client", func(t *testing.T) {
		lists := [][]string{
			{"consent", "history", "--tenant", "clio", "--subject", "sub-42", "-o", "json"},
			{"consent", "history", "--tenant", "clio", "--subject", "sub-42", "-o", "id"},
			{"registry", "tenants", "-o", "json"},
			{"dsar", "list", "--tenant", "cleura", "-o", "id"},
			{"retention", "holds", "--tenant", "cleura", "--all", "-o", "json"},
		}
		whole := make([]string, len(lists))
		for i, args := range lists {
			whole[i] = runOK(t, args...)
		}
		defer func(size int32) { listPageSize = size }(listPageSize)
		listPageSize = 1
		for i, args := range lists {
			if got := runOK(t, args...); got != whole[i] {
				t.Errorf("lethe %s, one item a page:\n%s\nin one page:\n%s", strings.Join(args, " "), got, whole[i])
			}
		}
		if ids := strings.Fields(whole[1]); len(ids) != 2 {
			t.Errorf("sub-42 has a grant and a withdrawal in the walk-through; history -o id lists %q", ids)
		}
		if ids := strings.Fields(whole[3]); len(ids) != 1 || ids[0] != sh.vars["ID"] {
			t.Errorf("dsar list -o id lists %q, want the walk-through's request %s", ids, sh.vars["ID"])
		}
	})
}

// runOK runs the CLI in process and wants exit 0; it returns stdout.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != exitOK {
		t.Fatalf("lethe %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// shellBlocks returns the ```sh blocks of the README section that starts
// with heading, up to the next section.
func shellBlocks(t *testing.T, readme, heading string) []string {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n"+heading)
	if !ok {
		t.Fatalf("README has no section %q", heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)\n```sh\n(.*?)\n```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) == 0 {
		t.Fatalf("README section %q has no sh blocks", heading)
	}
	return blocks
}

// readmeShell runs a README block as a shell would, for the little shell
// the walk-through uses: comments, line continuations, `;`, NAME=value,
// NAME=$(command), $NAME and ${NAME}, quotes, `for NAME in WORDS; do …
// done`, and `command; echo $?` whose comment states the exit code it
// shows ("# 1: withdrawn"). `./lethe` commands run through run(); other
// commands (go build, go run of the example system) are not the CLI's and
// are skipped. `curl` commands are made by an HTTP client to lethe dev's
// HTTP/JSON listener, each answering the HTTP status its comment states
// ("# 404: not_found", 200 without one) and, for "naming FIELD", an
// error whose BadRequest detail names FIELD. Anything else it does not know fails the test, so that the
// README stays within what is checked.
type readmeShell struct {
	t        *testing.T
	vars     map[string]string
	ran      int    // lethe commands run
	curls    int    // curl commands run
	httpAddr string // where lethe dev serves HTTP/JSON
}

// statement is one command of a block, with the exit code it must end
// with.
type statement struct {
	text string
	line string // the README line, for messages
	want int
}

var (
	assignCommand = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=\$\((.*)\)$`)
	assignValue   = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(\S*)$`)
	statedExit    = regexp.MustCompile(`^#\s*(\d+):`)
	forLoop       = regexp.MustCompile(`^for ([A-Za-z_][A-Za-z0-9_]*) in (.+)$`)
)

func (sh *readmeShell) runBlock(block string) {
	sh.exec(sh.statements(block))
}

// statements splits a block into statements, line by line.
func (sh *readmeShell) statements(block string) []statement {
	var out []statement
	for _, line := range strings.Split(strings.ReplaceAll(block, "\\\n", " "), "\n") {
		code, comment := cutComment(line)
		parts := splitUnquoted(code, ";&")
		for i, p := range parts {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			if p == "echo $?" {
				// The exit code is shown: the command before it may end
				// otherwise than 0, with the code the comment states.
				m := statedExit.FindStringSubmatch(comment)
				if m == nil || i == 0 || len(out) == 0 {
					sh.t.Fatalf("README: %q shows an exit code without stating it in a comment (# N: …)", line)
				}
				out[len(out)-1].want, _ = strconv.Atoi(m[1])
				continue
			}
			out = append(out, statement{text: p, line: strings.TrimSpace(line)})
		}
	}
	return out
}

func (sh *readmeShell) exec(stmts []statement) {
	for i := 0; i < len(stmts); i++ {
		s := stmts[i]
		m := forLoop.FindStringSubmatch(s.text)
		if m == nil {
			sh.statement(s)
			continue
		}
		end := i + 1
		for end < len(stmts) && stmts[end].text != "done" {
			end++
		}
		if end == len(stmts) {
			sh.t.Fatalf("README: %q has no done", s.line)
		}
		body := append([]statement(nil), stmts[i+1:end]...)
		if len(body) == 0 || (body[0].text != "do" && !strings.HasPrefix(body[0].text, "do ")) {
			sh.t.Fatalf("README: %q is not followed by do", s.line)
		}
		if body[0].text == "do" {
			body = body[1:]
		} else {
			body[0].text = strings.TrimPrefix(body[0].text, "do ")
		}
		for _, w := range sh.words(m[2], s.line) {
			sh.vars[m[1]] = w
			sh.exec(body)
		}
		i = end
	}
}

func (sh *readmeShell) statement(s statement) {
	if m := assignCommand.FindStringSubmatch(s.text); m != nil {
		out := sh.command(statement{text: m[2], line: s.line, want: s.want})
		value := strings.TrimSpace(out)
		if value == "" || strings.ContainsAny(value, " \n") {
			sh.t.Fatalf("README: %q: $(…) should print one id, printed %q", s.line, out)
		}
		sh.vars[m[1]] = value
		return
	}
	if m := assignValue.FindStringSubmatch(s.text); m != nil {
		sh.vars[m[1]] = strings.Join(sh.words(m[2], s.line), " ")
		return
	}
	sh.command(s)
}

// command runs a ./lethe command and returns its standard output; any
// other command is skipped.
func (sh *readmeShell) command(s statement) string {
	words := sh.words(s.text, s.line)
	if words[0] == "curl" {
		sh.curl(words, s.line)
		return ""
	}
	if words[0] != "./lethe" {
		sh.t.Logf("README: not a lethe command, skipped: %s", s.text)
		return ""
	}
	var stdout, stderr bytes.Buffer
	code := run(words[1:], &stdout, &stderr)
	sh.ran++
	if code != s.want {
		sh.t.Fatalf("README: %s\nexit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.line, code, s.want, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// words splits a command into words as a shell does: quotes group,
// variables expand (outside single quotes); an unset variable fails.
func (sh *readmeShell) words(text, line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	quote := rune(0)
	rs := []rune(text)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == '\'' && r != '\'':
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			if quote == r {
				quote = 0
			} else if quote == 0 {
				quote, inWord = r, true
			} else {
				cur.WriteRune(r)
			}
		case r == '\\' && quote == 0 && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case r == '$':
			name, n := varName(rs[i+1:])
			if name == "" {
				sh.t.Fatalf("README: %q: a $ the test's shell does not know", line)
			}
			v, ok := sh.vars[name]
			if !ok {
				sh.t.Fatalf("README: %q uses $%s before it is set", line, name)
			}
			cur.WriteString(v)
			inWord = true
			i += n
		case (r == ' ' || r == '\t') && quote == 0:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		sh.t.Fatalf("README: %q has an unclosed quote", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		sh.t.Fatalf("README: %q: an empty command", line)
	}
	return words
}

// varName reads NAME or {NAME} after a $, and how many runes it took.
func varName(rs []rune) (string, int) {
	braced := len(rs) > 0 && rs[0] == '{'
	start := 0
	if braced {
		start = 1
	}
	end := start
	for end < len(rs) && (rs[end] == '_' || rs[end] >= 'A' && rs[end] <= 'Z' || rs[end] >= 'a' && rs[end] <= 'z' || end > start && rs[end] >= '0' && rs[end] <= '9') {
		end++
	}
	if end == start {
		return "", 0
	}
	if braced {
		if end >= len(rs) || rs[end] != '}' {
			return "", 0
		}
		return string(rs[start:end]), end + 1
	}
	return string(rs[start:end]), end
}

// cutComment splits a line at a # that starts a word outside quotes.
func cutComment(line string) (code, comment string) {
	quote := rune(0)
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i], line[i:]
		}
	}
	return line, ""
}

// splitUnquoted splits s at any of seps outside quotes and $(…).
func splitUnquoted(s, seps string) []string {
	var parts []string
	quote, depth, start := rune(0), 0, 0
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0 && strings.ContainsRune(seps, r):
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// TestREADMEGrpcurlBodies checks the README's grpcurl commands without
// grpcurl (the test command does not install it): each names a method the
// services serve, its -d body is that method's request as protojson reads
// it (field and enum names included), and no two mutations of one service
// share a request id — a reused id is answered with the first call's
// result, or refused when the request differs.
func TestREADMEGrpcurlBodies(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	method := regexp.MustCompile(`\b((?:lethe|grpc)\.[A-Za-z0-9_.]+)/([A-Za-z]+)\b`)
	body := regexp.MustCompile(`(?s) -d '([^']*)'`)
	// '$NAME' closes the quote around a shell variable: an id the block
	// took from an earlier answer.
	shellVar := regexp.MustCompile(`'\$[A-Za-z_]+'`)
	requestIDs := map[string]string{}
	checked := 0
	for _, m := range regexp.MustCompile("(?s)\n```sh\n(.*?)\n```").FindAllStringSubmatch(string(readme), -1) {
		// A command ends at a newline outside quotes: a body may span lines.
		for _, line := range splitUnquoted(strings.ReplaceAll(m[1], "\\\n", " "), "\n") {
			if !strings.Contains(line, "grpcurl ") || strings.Contains(line, "go install") {
				continue
			}
			mm := method.FindStringSubmatch(line)
			if mm == nil {
				continue // list, describe
			}
			d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(mm[1]))
			if err != nil {
				t.Errorf("README: %s: no service %s: %v", line, mm[1], err)
				continue
			}
			sd, ok := d.(protoreflect.ServiceDescriptor)
			if !ok || sd.Methods().ByName(protoreflect.Name(mm[2])) == nil {
				t.Errorf("README: %s: %s has no method %s", line, mm[1], mm[2])
				continue
			}
			checked++
			b := body.FindStringSubmatch(shellVar.ReplaceAllString(line, "x"))
			if b == nil {
				continue
			}
			req := dynamicpb.NewMessage(sd.Methods().ByName(protoreflect.Name(mm[2])).Input())
			if err := protojson.Unmarshal([]byte(b[1]), req); err != nil {
				t.Errorf("README: %s/%s: the body is not its request: %v\n%s", mm[1], mm[2], err, b[1])
				continue
			}
			if f := req.Descriptor().Fields().ByName("request_id"); f != nil {
				key := mm[1] + " " + req.Get(f).String()
				if prev, dup := requestIDs[key]; dup {
					t.Errorf("README: request id %q of %s is used by %s and %s", req.Get(f).String(), mm[1], prev, mm[2])
				}
				requestIDs[key] = mm[2]
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d grpcurl commands of the README; it has more", checked)
	}
}

// readmeHTTPAddr is the HTTP/JSON address the README's curl commands use,
// lethe dev's default.
const readmeHTTPAddr = "127.0.0.1:7410"

var (
	statedStatus = regexp.MustCompile(`^#\s*(\d{3}):\s*(\S+)`)
	namingField  = regexp.MustCompile(`naming (\S+)`)
)

// curl makes the README's curl command (-s, -H, -d and a URL) with an HTTP
// client, to lethe dev's HTTP/JSON address.
func (sh *readmeShell) curl(words []string, line string) {
	t := sh.t
	sh.curls++
	var body, target string
	header := http.Header{}
	for i := 1; i < len(words); i++ {
		switch w := words[i]; {
		case w == "-s":
		case (w == "-H" || w == "-d") && i+1 < len(words):
			i++
			if w == "-d" {
				body = words[i]
			} else if name, value, ok := strings.Cut(words[i], ":"); ok {
				header.Set(name, strings.TrimSpace(value))
			}
		case strings.HasPrefix(w, "http://"+readmeHTTPAddr+"/"):
			target = "http://" + sh.httpAddr + strings.TrimPrefix(w, "http://"+readmeHTTPAddr)
		default:
			t.Fatalf("README: %q: curl option %q is not one the test makes", line, w)
		}
	}
	if target == "" || body == "" {
		t.Fatalf("README: %q: want a JSON body (-d) and a URL at %s", line, readmeHTTPAddr)
	}
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("README: %s: %v", line, err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_, comment := cutComment(line)
	m := statedStatus.FindStringSubmatch(comment)
	if m == nil {
		var answer map[string]any
		if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &answer) != nil {
			t.Fatalf("README: %s\n%s %s, want 200 and a JSON answer", line, resp.Status, out)
		}
		return
	}
	e := servertest.DecodeHTTPError(t, out)
	if strconv.Itoa(resp.StatusCode) != m[1] || e.Code != strings.TrimSuffix(m[2], ",") {
		t.Fatalf("README: %s\n%s %s, want %s %s", line, resp.Status, out, m[1], m[2])
	}
	if f := namingField.FindStringSubmatch(comment); f != nil && !slices.Contains(e.Fields(), f[1]) {
		t.Fatalf("README: %s\n%s names %q, want %s", line, out, e.Fields(), f[1])
	}
}
