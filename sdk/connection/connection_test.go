package connection_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/lethe-privacy/lethe/sdk/connection"
)

// A system connects as its own user with the password from a file and the
// inbox prefix its permissions confine it to, and half a configuration is
// refused.
func TestNATSOptions(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	apply := func(t *testing.T, c connection.NATS) nats.Options {
		t.Helper()
		opts, err := c.Options("newsletter")
		if err != nil {
			t.Fatal(err)
		}
		o := nats.GetDefaultOptions()
		for _, opt := range opts {
			if err := opt(&o); err != nil {
				t.Fatal(err)
			}
		}
		return o
	}
	o := apply(t, connection.NATS{User: "newsletter@clio", PasswordFile: pwFile})
	if o.User != "newsletter@clio" || o.Password != "s3cret" || o.InboxPrefix != "_INBOX.newsletter@clio" || o.Name != "newsletter" {
		t.Errorf("user %q, password %q, inbox prefix %q, name %q", o.User, o.Password, o.InboxPrefix, o.Name)
	}
	if o.MaxReconnect != -1 || o.MaxPingsOut != 2 {
		t.Errorf("max reconnects %d, max pings out %d: want to reconnect for ever and notice a cut-off node", o.MaxReconnect, o.MaxPingsOut)
	}
	if o := apply(t, connection.NATS{User: "newsletter@clio", PasswordFile: pwFile, InboxPrefix: "_INBOX.custom"}); o.InboxPrefix != "_INBOX.custom" {
		t.Errorf("inbox prefix %q, want the flag's", o.InboxPrefix)
	}
	if o := apply(t, connection.NATS{}); o.User != "" || o.InboxPrefix != "" {
		t.Errorf("without a user: user %q, inbox prefix %q", o.User, o.InboxPrefix)
	}
	for _, c := range []connection.NATS{
		{User: "newsletter@clio"},
		{PasswordFile: pwFile},
		{User: "newsletter@clio", PasswordFile: empty},
		{User: "newsletter@clio", PasswordFile: filepath.Join(dir, "missing")},
		{CertFile: "tls.crt"},
		{KeyFile: "tls.key"},
	} {
		if _, err := c.Options("newsletter"); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// The flags fill the configuration they were registered for.
func TestRegisterFlags(t *testing.T) {
	var c connection.NATS
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	err := fs.Parse([]string{"--nats-user", "u@t", "--nats-password-file", "pw", "--nats-inbox-prefix", "_INBOX.x",
		"--nats-ca", "ca.crt", "--nats-cert", "tls.crt", "--nats-key", "tls.key"})
	if err != nil {
		t.Fatal(err)
	}
	want := connection.NATS{User: "u@t", PasswordFile: "pw", InboxPrefix: "_INBOX.x", CAFile: "ca.crt", CertFile: "tls.crt", KeyFile: "tls.key"}
	if c != want {
		t.Errorf("%+v, want %+v", c, want)
	}
}
