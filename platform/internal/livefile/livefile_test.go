package livefile

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func parseUpper(c [][]byte) (string, error) {
	s := strings.TrimSpace(string(c[0]))
	if s == "" || strings.ToUpper(s) != s {
		return "", errors.New("not upper case")
	}
	return s, nil
}

func TestReloadKeepsTheLastGoodVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "value")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ONE")
	var logs bytes.Buffer
	f, err := Load([]string{path}, parseUpper, Options{Interval: time.Hour, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	f.now = func() time.Time { return clock }

	write("TWO!")
	if got := f.Get(); got != "ONE" {
		t.Fatalf("within the interval Get = %q, want ONE: files are looked at once per interval", got)
	}
	clock = clock.Add(time.Hour)
	if got := f.Get(); got != "TWO!" {
		t.Fatalf("after the interval Get = %q, want TWO!", got)
	}

	write("broken")
	clock = clock.Add(time.Hour)
	if got := f.Get(); got != "TWO!" {
		t.Fatalf("after a broken write Get = %q, want the last good TWO!", got)
	}
	clock = clock.Add(time.Hour)
	f.Get()
	if n := strings.Count(logs.String(), "not reloaded"); n != 1 {
		t.Fatalf("the broken file was logged %d times, want once until it changes:\n%s", n, logs.String())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Hour)
	if got := f.Get(); got != "TWO!" {
		t.Fatalf("after the file was removed Get = %q, want the last good TWO!", got)
	}
	write("THREE")
	clock = clock.Add(time.Hour)
	if got := f.Get(); got != "THREE" {
		t.Fatalf("after a good write Get = %q, want THREE", got)
	}
}

// TestReplacementWithinOneClockTick: a file renamed over the old one is
// read again even when it has the old one's size and modification time,
// as it has when both were written within one tick of the file system's
// clock (a key file of one type always has the same size).
func TestReplacementWithinOneClockTick(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "value")
	replace := func(s string, mtime time.Time) {
		t.Helper()
		tmp := filepath.Join(dir, "value.tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	tick := time.Now().Truncate(time.Second)
	replace("ONE", tick)
	f, err := Load([]string{path}, parseUpper, Options{Interval: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	replace("TWO", tick)
	if got := f.Get(); got != "TWO" {
		t.Fatalf("after a replacement of the same size and time Get = %q, want TWO", got)
	}
}

func TestLoadFailsWithoutAGoodVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "value")
	if _, err := Load([]string{path}, parseUpper, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if err := os.WriteFile(path, []byte("lower"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load([]string{path}, parseUpper, Options{}); err == nil {
		t.Fatal("Load of a file that does not parse succeeded")
	}
}
