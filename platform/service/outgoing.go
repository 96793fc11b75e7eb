package service

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/internal/livefile"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// Outgoing configures the connections a service makes: to the registry
// and the other services it calls over gRPC (Dialer), and to NATS. Secrets are never flag values; flags name files.
type Outgoing struct {
	// CAFile is the PEM CA bundle that signs the certificates of the
	// servers the service dials. When set, the registry and NATS are
	// dialled over TLS and the server's --tls-cert is presented to them.
	CAFile string
	// NATSCredsFile is a NATS credentials file (user JWT and nkey seed).
	NATSCredsFile string
	// NATSUser and NATSPasswordFile are a NATS user and the file holding
	// its password, read again at every reconnect.
	NATSUser         string
	NATSPasswordFile string
}

// RegisterFlags binds o to fs.
func (o *Outgoing) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.CAFile, "tls-ca", "", "PEM CA bundle that signs the certificates of NATS, the registry and the other services this one calls; when set all are dialled over TLS, presenting --tls-cert (required in production)")
	fs.StringVar(&o.NATSCredsFile, "nats-creds", "", "NATS credentials file (user JWT and nkey seed) to connect with")
	fs.StringVar(&o.NATSUser, "nats-user", "", "NATS user to connect as, with --nats-password-file")
	fs.StringVar(&o.NATSPasswordFile, "nats-password-file", "", "file holding the password of --nats-user; re-read when it changes")
}

// check returns what the profile refuses in o. Production refuses
// plaintext connections and credentials written into the NATS URL, which a
// flag or environment value would expose in process listings. The caller
// reports these with the server configuration's refusals, so that one
// failed start names every missing piece.
func (o Outgoing) check(profile, natsURL string) []error {
	var errs []error
	if (o.NATSUser == "") != (o.NATSPasswordFile == "") {
		errs = append(errs, errors.New("--nats-user and --nats-password-file go together"))
	}
	if profile == server.ProfileProduction {
		if o.CAFile == "" {
			errs = append(errs, errors.New("production dials NATS, the registry and the services it calls over TLS only: set --tls-ca"))
		}
		if urlHasCredentials(natsURL) {
			errs = append(errs, errors.New("production refuses credentials in --nats-url (a secret in a flag value): use --nats-user with --nats-password-file, --nats-creds, or a client certificate"))
		}
	}
	return errs
}

// options returns the NATS options and the dialer of the registry and the
// other services for the completed server configuration, refusing what
// check refuses.
func (o Outgoing) options(cfg server.CompletedConfig, natsURL string) ([]nats.Option, Dialer, error) {
	if err := errors.Join(o.check(cfg.Profile, natsURL)...); err != nil {
		return nil, Dialer{}, err
	}
	var natsOpts []nats.Option
	var roots *tlsconfig.Pool
	if o.CAFile != "" {
		var err error
		if roots, err = tlsconfig.LoadPool(o.CAFile, cfg.FileWatch); err != nil {
			return nil, Dialer{}, fmt.Errorf("--tls-ca: %w", err)
		}
		natsOpts = append(natsOpts, broker.TLS(cfg.KeyPair, roots))
	}
	if o.NATSCredsFile != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(o.NATSCredsFile))
	}
	if o.NATSUser != "" {
		password, err := livefile.Load([]string{o.NATSPasswordFile}, func(c [][]byte) (string, error) {
			p := strings.TrimSpace(string(c[0]))
			if p == "" {
				return "", errors.New("the password file is empty")
			}
			return p, nil
		}, livefile.Options{Logger: cfg.Logger})
		if err != nil {
			return nil, Dialer{}, fmt.Errorf("--nats-password-file: %w", err)
		}
		user := o.NATSUser
		natsOpts = append(natsOpts, nats.UserInfoHandler(func() (string, string) { return user, password.Get() }))
	}
	return natsOpts, NewDialer(cfg, roots), nil
}

// urlHasCredentials reports whether any of the comma-separated NATS URLs
// carries a user, password or token.
func urlHasCredentials(urls string) bool {
	for _, raw := range strings.Split(urls, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.User != nil {
			return true // an unparsable URL may hold a secret; refuse it too
		}
	}
	return false
}
