package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/consent"
)

// DefaultReplicaAddr and DefaultReplicaHTTPAddr are where lethe dev serves
// its consent read replica: next to its other ports (7410 HTTP, 7411
// public, 7412 demo).
const (
	DefaultReplicaAddr     = "127.0.0.1:7413"
	DefaultReplicaHTTPAddr = "127.0.0.1:7414"
)

// devReplica is lethe dev's consent read replica: the production shape in
// one process. It is the consent deployable's replica role
// (consent.ReplicaFactory) on a server of its own, with its own listeners,
// so that it answers as the lethe-consent-read Service does in a cluster:
// Check, CheckBatch and Watch from the writer's replication stream on the
// embedded NATS server, every other call refused READ_ONLY_REPLICA.
type devReplica struct {
	cfg server.CompletedConfig
	// dataDir holds the replica's local copy of the last snapshot it
	// restored (consent-replica-s0.snapshot), from which a restart
	// resumes.
	dataDir string
}

// newDevReplica binds the replica's listeners (so that a port in use
// fails lethe dev at once, and the printed addresses are the bound
// ones). Its server shares the writer's telemetry and output and takes
// the same authentication and policy; the metrics endpoint is the
// writer's (one meter provider: the replica's lag is among its metrics).
func newDevReplica(ctx context.Context, c devConfig, main server.CompletedConfig) (*devReplica, error) {
	cfg := c.server
	cfg.Name = "lethe-dev-replica"
	cfg.Addr, cfg.HTTPAddr = c.replicaAddr, c.replicaHTTPAddr
	cfg.MetricsAddr, cfg.HealthAddr = "", ""
	// Its own logger (named lethe-dev-replica) on lethe dev's output.
	cfg.Logger, cfg.Telemetry = nil, main.Telemetry
	completed, err := cfg.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("--replica-addr: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the consent replica on %s: %w", cfg.Addr, err)
	}
	completed.Listener = lis
	if cfg.HTTPAddr != "" {
		hlis, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen for the consent replica's HTTP on %s: %w", cfg.HTTPAddr, err), lis.Close())
		}
		completed.HTTPListener = hlis
	}
	return &devReplica{cfg: completed, dataDir: c.dataDir}, nil
}

// addrs are the replica's bound gRPC and HTTP addresses ("" without HTTP).
func (r *devReplica) addrs() (string, string) {
	return r.cfg.Listener.Addr().String(), httpAddr(r.cfg.HTTPListener)
}

// close releases the listeners when the replica never ran.
func (r *devReplica) close() error {
	err := r.cfg.Listener.Close()
	if r.cfg.HTTPListener != nil {
		err = errors.Join(err, r.cfg.HTTPListener.Close())
	}
	return err
}

// run waits for the writer's first replication snapshot (taken as its
// background work starts), restores it and follows the stream to its
// tail (consent.NewReplica), then serves until ctx ends. Until then the
// listener is bound but not served: a caller's connection waits rather
// than being refused.
func (r *devReplica) run(ctx context.Context, deps service.Deps) error {
	if err := awaitSnapshot(ctx, deps.JetStream); err != nil {
		err = errors.Join(err, r.close())
		if ctx.Err() != nil {
			return nil // stopped before the writer's first snapshot
		}
		return err
	}
	deps.DataDir = r.dataDir
	local, err := service.NewLocal(r.cfg, deps, []service.Factory{consent.ReplicaFactory(consent.ReplicaOptions{})})
	if err != nil {
		if r.cfg.HTTPListener != nil {
			err = errors.Join(err, r.cfg.HTTPListener.Close())
		}
		return fmt.Errorf("consent replica: %w", err)
	}
	return local.Run(ctx)
}

// awaitSnapshot returns once the snapshot bucket holds a snapshot: the
// writer's, which lethe dev hosts alone (shard s0), taken at its start or
// left by an earlier run on the same data folder. It watches the bucket
// rather than polling it; the writer provisioned the bucket before
// NewLocal returned.
func awaitSnapshot(ctx context.Context, js jetstream.JetStream) error {
	obs, err := js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		return fmt.Errorf("consent replica: the snapshot bucket: %w", err)
	}
	w, err := obs.Watch(ctx)
	if err != nil {
		return fmt.Errorf("consent replica: watch the snapshot bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case info, ok := <-w.Updates():
			if !ok {
				return errors.New("consent replica: the snapshot bucket's watch ended")
			}
			// nil marks the end of the objects present at the start.
			if info != nil && !info.Deleted {
				return nil
			}
		}
	}
}
