package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/lethe-privacy/lethe/platform/paging"
)

// opCmd is an operator command: connection flags, -o, --tenant.
type opCmd struct {
	name   string
	conn   connFlags
	fs     *flag.FlagSet
	tenant string
	stdout io.Writer
	stderr io.Writer
	cl     *clients
	ctx    context.Context
	done   func()
	// id and requestID are set when the command takes --id or
	// --request-id (idFlag, requestIDFlag); start checks and fills them.
	id        *string
	requestID *string
	// idOutput, when set, names the id that -o id prints (idOutputFlag).
	idOutput string
	// tenantRequired is set for a command that acts on a tenant (newOp),
	// not on a service as a whole (newPlatformOp).
	tenantRequired bool
}

func newOp(name, help string, stdout, stderr io.Writer) *opCmd {
	o := newPlatformOp(name, help, stdout, stderr)
	o.tenantRequired = true
	o.fs.StringVar(&o.tenant, "tenant", "", "the tenant (required)")
	return o
}

// newPlatformOp is an operator command that acts on a service as a whole,
// not on a tenant: it has no --tenant.
func newPlatformOp(name, help string, stdout, stderr io.Writer) *opCmd {
	o := &opCmd{name: name, stdout: stdout, stderr: stderr}
	o.fs = newFlagSet(name, help, stderr)
	o.conn.register(o.fs)
	o.conn.registerOutput(o.fs)
	return o
}

// start parses args and connects; a code >= 0 means stop with it.
func (o *opCmd) start(args []string, required ...string) int {
	if code := parse(o.fs, args); code >= 0 {
		return code
	}
	if o.tenant == "" && o.tenantRequired {
		return o.usage("--tenant is required")
	}
	if o.id != nil {
		if *o.id == "" && o.fs.NArg() > 0 {
			*o.id = o.fs.Arg(0)
		}
		if *o.id == "" {
			return o.usage("--id is required")
		}
	}
	if o.requestID != nil && *o.requestID == "" {
		*o.requestID = newRequestID()
	}
	set := map[string]bool{}
	o.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, r := range required {
		if !set[r] {
			return o.usage("--" + r + " is required")
		}
	}
	switch {
	case o.conn.output == "table" || o.conn.output == "json":
	case o.conn.output == "id" && o.idOutput != "":
	case o.idOutput != "":
		return o.usage("-o is table, json or id")
	default:
		return o.usage("-o is table or json")
	}
	cl, _, err := o.conn.dial()
	if err != nil {
		fmt.Fprintf(o.stderr, "lethe %s: %v\n", o.name, err)
		return exitUsage
	}
	o.cl = cl
	ctx, stop := signalContext()
	cctx, cancel := context.WithTimeout(ctx, o.conn.timeout)
	o.ctx, o.done = cctx, func() { cancel(); stop(); cl.Close() }
	return -1
}

// idFlag adds --id, the request's dsar id, also accepted as the first
// argument after the flags; start requires it.
func (o *opCmd) idFlag() *string {
	o.id = new(string)
	o.fs.StringVar(o.id, "id", "", "the request's dsar id (required)")
	return o.id
}

// requestIDFlag adds --request-id, the mutation's idempotency key; start
// chooses a new one when it is not given.
func (o *opCmd) requestIDFlag() *string {
	o.requestID = new(string)
	o.fs.StringVar(o.requestID, "request-id", "", "idempotency key (default a new one); reuse it to retry safely")
	return o.requestID
}

// idOutputFlag lets -o id print only the id of what the command creates
// or lists (what names it), one a line, so that a script takes it without
// a JSON tool: ID=$(lethe dsar create ... -o id).
func (o *opCmd) idOutputFlag(what string) {
	o.idOutput = what
	o.fs.Lookup("o").Usage = "output: table for people, json for scripts, id for the " + what + " alone"
}

func (o *opCmd) usage(msg string) int {
	fmt.Fprintf(o.stderr, "lethe %s: %s (see --help)\n", o.name, msg)
	return exitUsage
}

// fail reports a failed call and returns its exit code.
func (o *opCmd) fail(err error) int {
	fmt.Fprintf(o.stderr, "lethe %s: %v\n", o.name, err)
	return exitFor(err)
}

// answer prints what a command answered, as -o asks: resp as JSON, the
// ids alone one a line (-o id), or human's rendering for people.
func (o *opCmd) answer(resp proto.Message, ids []string, human func(w io.Writer)) {
	switch o.conn.output {
	case "json":
		printJSON(o.stdout, resp)
	case "id":
		for _, id := range ids {
			fmt.Fprintln(o.stdout, id)
		}
	default:
		human(o.stdout)
	}
}

// columns are how a table shows one kind of item, and the id that names
// an item for -o id.
type columns[T any] struct {
	header []string
	row    func(T) []any
	id     func(T) string
}

// print writes items as a table under the header.
func (c columns[T]) print(w io.Writer, items ...T) {
	t := newTable(w, c.header...)
	for _, it := range items {
		t.row(c.row(it)...)
	}
	t.flush()
}

// ids are the items' ids, in order; none when the kind has no id.
func (c columns[T]) ids(items ...T) []string {
	if c.id == nil {
		return nil
	}
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = c.id(it)
	}
	return out
}

// listed answers a list command: the merged answer listAll gathered as
// JSON, its items' ids, or their table.
func listed[T any](o *opCmd, resp proto.Message, items []T, c columns[T]) int {
	o.answer(resp, c.ids(items...), func(w io.Writer) { c.print(w, items...) })
	return exitOK
}

// listPageSize is the page listAll asks for: the largest the services
// serve, so that a listing takes as few calls as it can. A test makes it
// small to page through a short listing.
var listPageSize int32 = paging.MaxPageSize

// pagedResponse is the answer of a List RPC: one page, and the token of
// the next (empty on the last).
type pagedResponse interface {
	proto.Message
	GetNextPageToken() string
}

// listAll pages through a List RPC on the client side. It asks call for
// each page in turn, with the largest page the services serve and the
// token the previous page returned, until a page returns no token, and
// returns the pages merged into one answer: every page's items in order,
// and no next page token — what a single unpaged call would answer, so
// that -o json prints one document. A service that answers the token it
// was given would page forever; that is an error.
func listAll[Resp pagedResponse](call func(pageSize int32, pageToken string) (Resp, error)) (Resp, error) {
	var all, zero Resp
	token := ""
	for page := 0; ; page++ {
		resp, err := call(listPageSize, token)
		if err != nil {
			return zero, err
		}
		if page == 0 {
			all = resp
		} else {
			// Merge appends repeated fields: the items of this page.
			proto.Merge(all, resp)
		}
		next := resp.GetNextPageToken()
		if next == "" {
			break
		}
		if next == token {
			return zero, fmt.Errorf("the service answered page token %q with itself", token)
		}
		token = next
	}
	m := all.ProtoReflect()
	m.Clear(m.Descriptor().Fields().ByName("next_page_token"))
	return all, nil
}
