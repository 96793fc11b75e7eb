// Command lethe-registry runs Lethe's registry service as its own deployable, against
// an external NATS server. Run it with --help for its flags; every flag can
// also be set as a LETHE_<FLAG> environment variable.
package main

import (
	"os"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/registry"
)

func main() {
	os.Exit(service.Main(registry.Factory, registry.DefaultAddr, os.Args[1:]))
}
