//go:build linux

package deploy_test

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The NATS nodes in network namespaces. A partition needs a network to
// cut, and this machine is shared: nothing may change its own network.
// So the topology test runs itself again under `unshare --net`, in a
// network namespace of its own that nobody else sees, and there gives
// each NATS node a namespace of its own, linked by a veth pair to a
// bridge that the other processes (services, systems, CLI, the test)
// reach the nodes through, as pods reach each other through the pod
// network. Partitioning a node takes its bridge port down: every packet
// to and from it is dropped, on new and established connections, routes
// and clients alike, while the process runs on unaware; healing brings
// the port up again and the same TCP connections carry on.

// topologyNetEnv marks the run of the test inside its network namespace;
// topologyBinEnv names the binaries the outer run built.
const (
	topologyNetEnv = "LETHE_TOPOLOGY_NETNS"
	topologyBinEnv = "LETHE_TOPOLOGY_BIN"
)

// The NATS nodes' subnet: the bridge has .1, node i has .10+i.
const (
	topologyBridge = "lethe-br"
	topologySubnet = "10.77.0."
)

// runInNetworkNamespace runs TestProductionTopology again inside a
// network namespace of its own when the machine allows it, relaying its
// log, and reports whether it did (the caller then has nothing left to
// do). Inside that namespace, or where it cannot be made, it returns
// false and the test runs here, without the partition fault when there
// is no namespace.
func runInNetworkNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(topologyNetEnv) != "" {
		return false
	}
	if err := networkNamespacesWork(); err != nil {
		t.Logf("NOT partitioning a NATS node: the test cannot make network namespaces here (%v); "+
			"it runs every process on loopback, without that fault (it needs Linux, root, unshare and ip)", err)
		return false
	}
	// Build here: the go command may need its module proxy, which the
	// namespace cannot reach.
	bin, err := os.MkdirTemp("", "lethe-topology-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(bin) })
	buildTopologyBinaries(t, bin)

	args := []string{"--net", "--", os.Args[0], "-test.run", "^TestProductionTopology$", "-test.count", "1", "-test.v"}
	flag.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "topology.") {
			args = append(args, "-"+f.Name, f.Value.String())
		}
	})
	if deadline, ok := t.Deadline(); ok {
		// Time out inside first, so that the inner run reports where it
		// was and stops its processes, rather than both being killed.
		if left := time.Until(deadline) - 30*time.Second; left > time.Minute {
			args = append(args, "-test.timeout", left.Truncate(time.Second).String())
		}
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), topologyNetEnv+"=1", topologyBinEnv+"="+bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	t.Logf("running the topology in a network namespace of its own: unshare %s", strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Relay the inner test's log as this test's, without the lines the go
	// command would read as a test's start or result.
	failed := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "--- FAIL"):
			failed = true
			continue
		case strings.HasPrefix(trimmed, "=== ") || strings.HasPrefix(trimmed, "--- ") ||
			trimmed == "PASS" || trimmed == "FAIL" || strings.HasPrefix(trimmed, "ok "):
			continue
		}
		t.Log(strings.TrimPrefix(line, "    "))
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil || failed {
		t.Fatalf("the topology test in its network namespace failed: %v", err)
	}
	return true
}

// networkNamespacesWork checks, in a throw-away namespace, everything the
// topology's network needs: a namespace, a bridge and a veth pair.
func networkNamespacesWork() error {
	for _, tool := range []string{"unshare", "nsenter", "ip", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			return err
		}
	}
	out, err := exec.Command("unshare", "--net", "--", "sh", "-ec",
		"ip link add lethe-br-probe type bridge; ip link add lethe-v-probe type veth peer name lethe-p-probe; "+
			"ip link set lethe-v-probe master lethe-br-probe").CombinedOutput()
	if err != nil {
		return fmt.Errorf("unshare --net with a bridge and a veth pair: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// topologyNet is the NATS nodes' network inside the test's namespace.
type topologyNet struct {
	mu    sync.Mutex
	nodes map[string]*netNode
	order []string
}

// netNode is one NATS node's network namespace, held by a process that
// only sleeps so that the namespace outlives the node's restarts.
type netNode struct {
	host   string
	veth   string // the bridge's end of its veth pair
	holder *exec.Cmd
}

// joinTopologyNet returns the NATS nodes' network when the test runs in
// a namespace of its own (runInNetworkNamespace), nil otherwise: there
// the bridge is made, and lo brought up.
func joinTopologyNet(t *testing.T) *topologyNet {
	t.Helper()
	if os.Getenv(topologyNetEnv) == "" {
		return nil
	}
	ipCmd(t, "", "link", "set", "lo", "up")
	ipCmd(t, "", "link", "add", topologyBridge, "type", "bridge")
	ipCmd(t, "", "addr", "add", topologySubnet+"1/24", "dev", topologyBridge)
	ipCmd(t, "", "link", "set", topologyBridge, "up")
	n := &topologyNet{nodes: map[string]*netNode{}}
	t.Cleanup(func() {
		for _, node := range n.nodes {
			_ = node.holder.Process.Kill()
			_ = node.holder.Wait()
		}
	})
	return n
}

// hosts are the addresses the nodes will have, for their certificates.
func (n *topologyNet) hosts() []string {
	if n == nil {
		return nil
	}
	var hs []string
	for i := range 3 {
		hs = append(hs, topologySubnet+strconv.Itoa(10+i))
	}
	return hs
}

// addNode makes the namespace of NATS pod name (nats-<i>), links it to
// the bridge, and returns its address.
func (n *topologyNet) addNode(t *testing.T, name string) string {
	t.Helper()
	i, err := strconv.Atoi(strings.TrimPrefix(name, "nats-"))
	if err != nil || i < 0 || i > 2 {
		t.Fatalf("%s: the topology's network has room for nats-0 to nats-2", name)
	}
	host := n.hosts()[i]
	holder := exec.Command("unshare", "--net", "--", "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	node := &netNode{host: host, veth: "lethe-" + name, holder: holder}
	n.mu.Lock()
	n.nodes[name] = node
	n.order = append(n.order, name)
	n.mu.Unlock()
	// unshare execs sleep once the namespace is its own.
	self, _ := os.Readlink("/proc/self/ns/net")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ns, err := os.Readlink(node.nsPath()); err == nil && ns != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: unshare --net made no namespace within 10s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ipCmd(t, "", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", strconv.Itoa(holder.Process.Pid))
	ipCmd(t, "", "link", "set", node.veth, "master", topologyBridge, "up")
	ipCmd(t, node.nsPath(), "link", "set", "lo", "up")
	ipCmd(t, node.nsPath(), "addr", "add", host+"/24", "dev", "eth0")
	ipCmd(t, node.nsPath(), "link", "set", "eth0", "up")
	return host
}

func (node *netNode) nsPath() string {
	return fmt.Sprintf("/proc/%d/ns/net", node.holder.Process.Pid)
}

// enter makes p run in node name's namespace: nsenter execs the binary,
// so the process the test signals is the node itself.
func (n *topologyNet) enter(name string, p *process) {
	n.mu.Lock()
	node := n.nodes[name]
	n.mu.Unlock()
	p.args = append([]string{"--net=" + node.nsPath(), "--", p.path}, p.args...)
	p.path = "nsenter"
}

// partition cuts node name off from every other process: its bridge
// port goes down. It checks that the node's address addr is unreachable
// before it returns.
func (n *topologyNet) partition(t *testing.T, name, addr string) {
	t.Helper()
	node := n.nodes[name]
	ipCmd(t, "", "link", "set", node.veth, "down")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s is partitioned away but %s still accepts connections", name, addr)
	}
}

// heal links node name again.
func (n *topologyNet) heal(t *testing.T, name string) {
	t.Helper()
	ipCmd(t, "", "link", "set", n.nodes[name].veth, "up")
}

// ipCmd runs ip, in the namespace at nsPath when it is set.
func ipCmd(t *testing.T, nsPath string, args ...string) {
	t.Helper()
	cmd := exec.Command("ip", args...)
	if nsPath != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "--", "ip"}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
	}
}
