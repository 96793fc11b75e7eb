package service

import (
	"context"
	"errors"
	"time"
)

// Background is a service's background work: workers that run until the
// context ends (the outbox relay, consumers of the stream) and a periodic
// tick (sweeps), run on a timer and whenever Wake is signalled.
type Background struct {
	// Workers run concurrently until ctx ends. One that returns nil early is
	// simply done; one that fails stops the others.
	Workers []func(context.Context) error
	// Every is the tick's period; Tick runs in Run's goroutine, so ticks
	// never overlap. No tick when Tick is nil.
	Every time.Duration
	Tick  func(context.Context)
	// Wake, when set, runs the tick early; a buffered channel of one lets
	// callers ask without blocking.
	Wake <-chan struct{}
}

// Run runs the workers and the tick until ctx ends or a worker fails, then
// stops the others and returns once all have returned, with the failures
// joined. Like every Run of a service, it returns nil when ctx ended.
func (b Background) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(b.Workers))
	for _, w := range b.Workers {
		go func() { errs <- w(ctx) }()
	}
	var tick <-chan time.Time
	if b.Tick != nil {
		t := time.NewTicker(b.Every)
		defer t.Stop()
		tick = t.C
	}
	wake := b.Wake
	if b.Tick == nil {
		wake = nil
	}
	var err error
	running := len(b.Workers)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case e := <-errs:
			running--
			if e != nil {
				err = e
				break loop
			}
		case <-tick:
			b.Tick(ctx)
		case <-wake:
			b.Tick(ctx)
		}
	}
	cancel()
	for ; running > 0; running-- {
		err = errors.Join(err, <-errs)
	}
	return err
}
