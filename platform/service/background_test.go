package service_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

func TestBackgroundStopsEveryWorkerWhenOneFails(t *testing.T) {
	boom := errors.New("consumer lost")
	var stopped atomic.Bool
	err := service.Background{Workers: []func(context.Context) error{
		func(ctx context.Context) error { <-ctx.Done(); stopped.Store(true); return nil },
		func(context.Context) error { return boom },
	}}.Run(context.Background())
	if !errors.Is(err, boom) || !stopped.Load() {
		t.Fatalf("Run = %v, other worker stopped %v; want the failure, and the other worker stopped", err, stopped.Load())
	}
}

func TestBackgroundTicksOnTimerAndWake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	wake := make(chan struct{}, 1)
	var ticks atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- service.Background{Every: time.Hour, Wake: wake, Tick: func(context.Context) { ticks.Add(1) },
			Workers: []func(context.Context) error{func(ctx context.Context) error { <-ctx.Done(); return nil }}}.Run(ctx)
	}()
	wake <- struct{}{}
	eventually.True(t, "a wake ticks", func() bool { return ticks.Load() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after the context ended = %v, want nil", err)
	}
}
