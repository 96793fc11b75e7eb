// Command lethe is Lethe's command-line tool: it starts the whole platform
// for development (lethe dev) and operates a running one over its gRPC
// APIs, as kubectl operates a cluster — declaring tenants as files (apply,
// diff, export), and answering consent questions, data-subject requests,
// retention and register questions from a terminal or a script. docs/cli.md
// is its manual; every command's --help teaches it with examples.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lethe-privacy/lethe/platform/service"
)

const usage = `lethe is the command-line tool of the Lethe privacy platform.

Usage:
  lethe <command> [flags]

Run the platform:
  dev          start the whole platform in one process (embedded NATS, all
               four services, data under --data)

Privacy as code (tenant files, docs/tenant-files.md):
  apply        make the platform's configuration what tenant files declare
  diff         show what apply would change (exit 1 when something would)
  export       write a tenant's live configuration as a tenant file
  validate     check tenant files without changing anything
  schema       print the JSON Schema of tenant files

Operate:
  consent      check, grant, withdraw, history, fanout, complete-task,
               accept-recovery-gap
  dsar         create, list, show, verify, complete-task, extend, reject,
               cancel, export, receipt
  retention    preview, holds, explain, report
  registry     findings, ropa, disclosures, tenants
  audit        verify (the audit chains of a data folder)
  events       tail (follow the platform's event stream, decoded)

Every operator command talks to lethe dev's address (127.0.0.1:7400) unless
a context of ~/.config/lethe/config or flags say otherwise (docs/cli.md);
"lethe <command> --help" shows its flags and examples. Output is a table,
-o json (the API's answer) or, where a command creates or lists things,
-o id (their ids alone, for ID=$(lethe ...)). Exit codes: 0 done,
1 a negative answer (diff found changes, consent denied), 2 usage, 3 refused
as invalid, 4 the platform failed.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands are the top-level commands by name.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"dev":       runDev,
	"apply":     runApply,
	"diff":      runDiff,
	"export":    runExport,
	"validate":  runValidate,
	"schema":    runSchema,
	"consent":   runConsent,
	"dsar":      runDSAR,
	"retention": runRetention,
	"registry":  runRegistry,
	"audit":     runAudit,
	"events":    runEvents,
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	if cmd, ok := commands[args[0]]; ok {
		return cmd(args[1:], stdout, stderr)
	}
	switch args[0] {
	case "help", "-h", "--help":
		if len(args) > 1 {
			if cmd, ok := commands[args[1]]; ok {
				return cmd([]string{"--help"}, stdout, stdout)
			}
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "lethe: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// subcommand dispatches "lethe <group> <sub> ..." to the group's
// subcommands.
func subcommand(group, help string, subs map[string]func([]string, io.Writer, io.Writer) int, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, strings.TrimLeft(help, "\n"))
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if sub, ok := subs[args[0]]; ok {
		return sub(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "lethe %s: unknown command %q\n\n%s", group, args[0], strings.TrimLeft(help, "\n"))
	return exitUsage
}

func signalContext() (context.Context, context.CancelFunc) { return service.SignalContext() }
