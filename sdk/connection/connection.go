// Package connection is how a system's process connects to Lethe's NATS:
// the --nats-* flags every subscriber's main needs and the client options
// they make (its own user with the password read from a file, the
// reply-subject prefix that user is confined to, mutual TLS). The
// newsletter example and lethe-connect both use it.
package connection

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS is how a system connects to Lethe's NATS; the zero value connects
// anonymously in plaintext (lethe dev).
type NATS struct {
	// User is the NATS user, system@tenant in Lethe's shipped
	// configuration (deploy/nats/auth.conf); empty for none.
	User string
	// PasswordFile holds User's password; a password is never a flag value.
	PasswordFile string
	// InboxPrefix is the reply-subject prefix User may receive on;
	// _INBOX.<User> when empty and User is set.
	InboxPrefix string
	// CAFile is the CA certificate that signed the NATS server's
	// certificate.
	CAFile string
	// CertFile and KeyFile are the client certificate and key for mutual
	// TLS; both or neither.
	CertFile, KeyFile string
}

// RegisterFlags registers the --nats-user, --nats-password-file,
// --nats-inbox-prefix, --nats-ca, --nats-cert and --nats-key flags on fs,
// filling c.
func (c *NATS) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.User, "nats-user", "", "NATS user, `system@tenant` in Lethe's shipped configuration")
	fs.StringVar(&c.PasswordFile, "nats-password-file", "", "file holding the NATS user's password (never a flag value)")
	fs.StringVar(&c.InboxPrefix, "nats-inbox-prefix", "", "reply-subject prefix the user may receive on; _INBOX.<user> when empty and --nats-user is set")
	fs.StringVar(&c.CAFile, "nats-ca", "", "CA certificate that signed the NATS server's certificate")
	fs.StringVar(&c.CertFile, "nats-cert", "", "client certificate for mutual TLS with NATS")
	fs.StringVar(&c.KeyFile, "nats-key", "", "client key for mutual TLS with NATS")
}

// Options returns the options of a connection named name. A system keeps
// its connection for ever and notices within about twenty seconds (two
// missed pings) that its NATS node was cut off from the cluster, rather
// than the client's default four minutes. A system's user in Lethe's NATS
// may receive replies only under its own prefix, "_INBOX.<user>": with the
// default "_INBOX" every JetStream request would time out. Half a
// configuration (a user without a password file, a certificate without
// its key) is refused.
func (c NATS) Options(name string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.PingInterval(10 * time.Second), nats.MaxPingsOutstanding(2)}
	switch {
	case c.User != "":
		password, err := c.password()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(c.User, password))
		if c.InboxPrefix == "" {
			c.InboxPrefix = "_INBOX." + c.User
		}
	case c.PasswordFile != "":
		return nil, errors.New("--nats-password-file needs --nats-user")
	}
	if c.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.InboxPrefix))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	switch {
	case c.CertFile != "" && c.KeyFile != "":
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	case c.CertFile != "" || c.KeyFile != "":
		return nil, errors.New("--nats-cert and --nats-key go together")
	}
	return opts, nil
}

// password reads the user's password from its file.
func (c NATS) password() (string, error) {
	if c.PasswordFile == "" {
		return "", errors.New("--nats-user needs --nats-password-file")
	}
	pw, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("nats password: %w", err)
	}
	password := strings.TrimSpace(string(pw))
	if password == "" {
		return "", fmt.Errorf("nats password: %s is empty", c.PasswordFile)
	}
	return password, nil
}
