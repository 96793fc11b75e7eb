// Command lethe-consent runs Lethe's consent service as its own deployable, against
// an external NATS server. Run it with --help for its flags; every flag can
// also be set as a LETHE_<FLAG> environment variable.
package main

import (
	"os"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/consent"
)

func main() {
	os.Exit(service.Main(consent.Factory, consent.DefaultAddr, os.Args[1:]))
}
