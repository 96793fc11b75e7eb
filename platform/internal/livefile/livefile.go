// Package livefile keeps the parsed contents of files that operators
// replace while a process runs — certificates, CA bundles, token-signing
// keys — current without a restart, and never worse than the last good
// version: a file that is missing, half-written or does not parse leaves
// the value in force and is logged.
//
// A File checks its files' identity, size and modification time when it is
// read, at most once per interval, and re-reads them only when one changed.
// So readers on a hot path (a TLS handshake, a token check) pay a clock
// read, and no goroutine has to be started or stopped. Kubernetes replaces
// a mounted Secret by swapping a symbolic link; os.Stat follows it and sees
// the new file.
package livefile

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often a File looks at its files when the caller
// does not say: rotation takes effect within a second.
const DefaultInterval = time.Second

// File is the parsed contents of one or more files (a certificate and its
// key are parsed together, so that a new pair replaces the old one whole).
type File[T any] struct {
	paths    []string
	parse    func(contents [][]byte) (T, error)
	interval time.Duration
	logger   *slog.Logger
	now      func() time.Time

	value    atomic.Pointer[T]
	nextLook atomic.Int64 // unix nanoseconds before which Get does not look

	mu   sync.Mutex // serialises reloads
	seen []stamp    // the files as they were at the last attempt
}

// stamp is what tells that a file changed: its identity, size and
// modification time, or the error of looking at it. Size and time alone
// miss a replacement: this project's file systems keep times in steps of a
// clock tick (measured on ext4: half of 2,000 consecutive writes shared the
// time of the one before), and a key file of one type always has the same
// size. A file replaced by renaming a new one over it, as an operator or
// the kubelet does, is another file, which os.SameFile tells.
type stamp struct {
	info os.FileInfo // nil when err is set
	err  string
}

func (a stamp) equal(b stamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	return a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime()) && os.SameFile(a.info, b.info)
}

// Options tune a File; the zero value is fine.
type Options struct {
	// Interval is the least time between two looks at the files;
	// DefaultInterval when zero, every read when negative (tests).
	Interval time.Duration
	// Logger receives reload successes (Info) and failures (Error);
	// slog.Default() when nil.
	Logger *slog.Logger
}

// Load reads and parses paths now and returns the File that keeps them
// current. An error here is fatal to the caller: there is no good version
// yet to fall back on.
func Load[T any](paths []string, parse func(contents [][]byte) (T, error), opts Options) (*File[T], error) {
	if len(paths) == 0 {
		return nil, errors.New("livefile: no file to load")
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &File[T]{paths: slices.Clone(paths), parse: parse, interval: opts.Interval, logger: opts.Logger, now: time.Now}
	f.seen = f.stat()
	v, err := f.read()
	if err != nil {
		return nil, err
	}
	f.value.Store(&v)
	f.nextLook.Store(f.now().Add(f.interval).UnixNano())
	return f, nil
}

// Get returns the current value, first reloading it when the interval has
// passed and a file changed.
func (f *File[T]) Get() T {
	if f.interval < 0 || f.now().UnixNano() >= f.nextLook.Load() {
		f.refresh()
	}
	return *f.value.Load()
}

// refresh reloads the files if they changed since the last attempt. A
// failed attempt is not repeated until a file changes again, so a broken
// file is logged once per change, not once per handshake.
func (f *File[T]) refresh() {
	if !f.mu.TryLock() {
		return // another reader is reloading; this one serves the current value
	}
	defer f.mu.Unlock()
	f.nextLook.Store(f.now().Add(f.interval).UnixNano())
	stamps := f.stat()
	if slices.EqualFunc(stamps, f.seen, stamp.equal) {
		return
	}
	f.seen = stamps
	v, err := f.read()
	if err != nil {
		f.logger.Error("file not reloaded; the previous version stays in force", "files", f.paths, "error", err)
		return
	}
	f.value.Store(&v)
	f.logger.Info("file reloaded", "files", f.paths)
}

func (f *File[T]) stat() []stamp {
	stamps := make([]stamp, len(f.paths))
	for i, p := range f.paths {
		fi, err := os.Stat(p)
		if err != nil {
			stamps[i] = stamp{err: err.Error()}
			continue
		}
		stamps[i] = stamp{info: fi}
	}
	return stamps
}

func (f *File[T]) read() (T, error) {
	contents := make([][]byte, len(f.paths))
	for i, p := range f.paths {
		data, err := os.ReadFile(p)
		if err != nil {
			var zero T
			return zero, err
		}
		contents[i] = data
	}
	v, err := f.parse(contents)
	if err != nil {
		return v, fmt.Errorf("%v: %w", f.paths, err)
	}
	return v, nil
}
