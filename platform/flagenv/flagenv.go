// Package flagenv lets environment variables stand in for command-line
// flags, the way Kubernetes manifests usually configure a process: a flag
// "--nats-url" can be given as LETHE_NATS_URL. Precedence is command line,
// then environment, then the flag's default.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name returns the environment variable that stands for flag name under
// prefix: Name("LETHE", "nats-url") is "LETHE_NATS_URL".
func Name(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Apply sets every flag of fs that was not given on the command line from
// its environment variable, if that is set. Call it after fs.Parse.
func Apply(fs *flag.FlagSet, prefix string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		env := Name(prefix, f.Name)
		if v, ok := os.LookupEnv(env); ok {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, setErr)
			}
		}
	})
	return err
}

// SetDefault changes the default of a registered flag, for a host that
// shares flag definitions but wants other defaults. It panics if the flag
// does not exist or value does not parse: both are programming errors.
func SetDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("flagenv: no flag " + name)
	}
	if err := f.Value.Set(value); err != nil {
		panic(fmt.Sprintf("flagenv: default %q for --%s: %v", value, name, err))
	}
	f.DefValue = value
}
