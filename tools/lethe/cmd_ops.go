package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
}

func newOp(name, help string, stdout, stderr io.Writer) *opCmd {
	o := &opCmd{name: name, stdout: stdout, stderr: stderr}
	o.fs = newFlagSet(name, help, stderr)
	o.conn.register(o.fs)
	o.conn.registerOutput(o.fs)
	o.fs.StringVar(&o.tenant, "tenant", "", "the tenant (required)")
	return o
}

// start parses args and connects; a code >= 0 means stop with it.
func (o *opCmd) start(args []string, required ...string) int {
	if code := parse(o.fs, args); code >= 0 {
		return code
	}
	if o.tenant == "" {
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
	if o.conn.output != "table" && o.conn.output != "json" {
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

func (o *opCmd) usage(msg string) int {
	fmt.Fprintf(o.stderr, "lethe %s: %s (see --help)\n", o.name, msg)
	return exitUsage
}

// fail reports a failed call and returns its exit code.
func (o *opCmd) fail(err error) int {
	fmt.Fprintf(o.stderr, "lethe %s: %v\n", o.name, err)
	return exitFor(err)
}

func (o *opCmd) json() bool { return o.conn.output == "json" }
