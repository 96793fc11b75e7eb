// Command lethe is Lethe's command-line tool. Today it has one command:
//
//	lethe dev    start the whole platform in one process, for development,
//	             demos and tests: all four services on one gRPC address,
//	             an embedded NATS server with JetStream, and every bbolt
//	             file and the NATS store under one data folder.
//
// Operator commands (apply, diff, consent, dsar, …) join it as the services'
// APIs land.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `lethe is the command-line tool of the Lethe privacy platform.

Usage:
  lethe dev [flags]    start the whole platform in one process (embedded NATS,
                       all four services, data under --data)
  lethe help           show this help

Run "lethe dev --help" for the flags of dev. Every flag can also be set as an
environment variable: --nats-addr is LETHE_NATS_ADDR.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "dev":
		return runDev(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "lethe: unknown command %q\n\n%s", args[0], usage)
	return 2
}
