// Command lethe-dsar runs Lethe's DSAR service as its own deployable, against
// an external NATS server. Run it with --help for the kit's flags; every
// flag can also be set as a LETHE_<FLAG> environment variable. Among them
// are the addresses of the services DSAR calls (dsar.Neighbours):
// --consent-addr and --retention-addr, which production requires.
package main

import (
	"os"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/dsar"
)

func main() {
	os.Exit(service.Main(dsar.Factory, dsar.DefaultAddr, os.Args[1:]))
}
