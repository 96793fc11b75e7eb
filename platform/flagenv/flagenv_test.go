package flagenv

import (
	"flag"
	"testing"
)

func TestApplyPrecedence(t *testing.T) {
	t.Setenv("LETHE_NATS_URL", "nats://env:4222")
	t.Setenv("LETHE_DATA", "/env/data")
	t.Setenv("LETHE_DRAIN", "not-a-duration")

	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	natsURL := fs.String("nats-url", "nats://default:4222", "")
	data := fs.String("data", "./data", "")
	addr := fs.String("addr", "127.0.0.1:7400", "")
	if err := fs.Parse([]string{"--data", "/flag/data"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, "LETHE"); err != nil {
		t.Fatal(err)
	}
	if *natsURL != "nats://env:4222" {
		t.Errorf("nats-url = %q, want the environment's value", *natsURL)
	}
	if *data != "/flag/data" {
		t.Errorf("data = %q, want the command line's value over the environment's", *data)
	}
	if *addr != "127.0.0.1:7400" {
		t.Errorf("addr = %q, want the default", *addr)
	}

	bad := flag.NewFlagSet("bad", flag.ContinueOnError)
	bad.Duration("drain", 0, "")
	if err := bad.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := Apply(bad, "LETHE"); err == nil {
		t.Error("Apply accepted LETHE_DRAIN=not-a-duration")
	}
}
