// Command lethe-dsar runs Lethe's DSAR service as its own deployable, against
// an external NATS server. Run it with --help for the kit's flags; every
// flag can also be set as a LETHE_<FLAG> environment variable.
//
// Beside the kit's flags it takes the addresses of the two neighbours the
// DSAR service calls (in lethe dev one address serves all four services,
// so the registry's connection is used for them):
//
//	--consent-addr    the consent service (LETHE_CONSENT_ADDR), default 127.0.0.1:7401
//	--retention-addr  the retention service (LETHE_RETENTION_ADDR), default 127.0.0.1:7403
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/dsar"
)

func main() {
	args, addrs := neighbours(os.Args[1:], map[string]string{
		"consent-addr": "127.0.0.1:7401", "retention-addr": "127.0.0.1:7403",
	})
	consent, err := service.DialRegistry(addrs["consent-addr"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lethe-dsar:", err)
		os.Exit(1)
	}
	retention, err := service.DialRegistry(addrs["retention-addr"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lethe-dsar:", err)
		os.Exit(1)
	}
	f := service.Factory{Name: dsar.Factory.Name, New: func(deps service.Deps) (service.Service, error) {
		return dsar.New(deps, dsar.Options{Consent: consent, Retention: retention})
	}}
	code := service.Main(f, dsar.DefaultAddr, args)
	_ = consent.Close()
	_ = retention.Close()
	os.Exit(code)
}

// neighbours takes the DSAR service's own flags (--name value or
// --name=value, environment LETHE_<NAME>) out of args, leaving the kit's
// flags for service.Main.
func neighbours(args []string, defaults map[string]string) ([]string, map[string]string) {
	out := map[string]string{}
	for name, def := range defaults {
		out[name] = def
		if v := os.Getenv("LETHE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); v != "" {
			out[name] = v
		}
	}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		name, value, hasValue := strings.Cut(a, "=")
		if _, ok := defaults[name]; !ok || !strings.HasPrefix(args[i], "-") {
			rest = append(rest, args[i])
			continue
		}
		if !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		out[name] = value
	}
	return rest, out
}
