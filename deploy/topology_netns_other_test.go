//go:build unix && !linux

package deploy_test

import (
	"testing"
)

// Network namespaces are Linux's: elsewhere the topology runs on
// loopback, without the partition fault.

const topologyBinEnv = "LETHE_TOPOLOGY_BIN"

func runInNetworkNamespace(t *testing.T) bool {
	t.Log("NOT partitioning a NATS node: network namespaces are Linux's; the topology runs every process on loopback")
	return false
}

type topologyNet struct{}

func joinTopologyNet(*testing.T) *topologyNet             { return nil }
func (*topologyNet) hosts() []string                      { return nil }
func (*topologyNet) addNode(*testing.T, string) string    { return "127.0.0.1" }
func (*topologyNet) enter(string, *process)               {}
func (*topologyNet) partition(*testing.T, string, string) {}
func (*topologyNet) heal(*testing.T, string)              {}
