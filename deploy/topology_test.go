//go:build unix

package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/deploy/natsauth"
	"github.com/lethe-privacy/lethe/platform/broker"
)

// The production topology test runs the production overlay as a cluster
// would, but as separate processes on this machine: a three-node NATS
// JetStream cluster from the shipped configuration, the four deployables
// with --profile production and a consent read replica (the consent
// deployable's replica role, on its own NATS user), two downstream
// systems on the SDK and the lethe CLI, all over mutual TLS with certificates from the operator's
// script (deploy/certs/make-certs.sh). Every process gets its arguments
// and environment from the rendered overlay; the test substitutes only
// what a cluster provides: an address for each Service, a folder for each
// mounted volume holding what its Secret or ConfigMap holds, the pod's
// name. A variable, volume or address it cannot map fails the test, so a
// manifest that forgets something fails here, not in a cluster.

// topologyNamespace is the namespace the overlays render into.
const topologyNamespace = "lethe"

// topologyTenant is the tenant file the test applies; its systems are the
// two SDK systems the test runs.
var topologyTenant = filepath.Join(deploy.Dir(), "testdata", "topology-tenant.yaml")

// topologySystems are the downstream systems of tenant clio the test runs:
// newsletter@clio is a user of the shipped NATS configuration, mailer@clio
// is added as deploy/README.md tells an operator to.
var topologySystems = []string{"newsletter", "mailer"}

// systemAckWait is the systems' ack wait, short so that the fault test can
// outlast it.
const systemAckWait = 3 * time.Second

// topology is the running production shape.
type topology struct {
	t      *testing.T
	dir    string
	bin    string // folder of the built binaries
	certs  string // make-certs.sh's output
	prod   *rendered
	pods   []*localPod
	byName map[string]*localPod
	// secrets are the Secrets the overlay expects an operator to create:
	// name → key → content.
	secrets map[string]map[string][]byte
	systems map[string]*process
	// operator is the lethe CLI's context file.
	operator string
	// net is the NATS nodes' network when each runs in a network
	// namespace of its own (topology_netns_linux_test.go); nil when all
	// processes share loopback.
	net *topologyNet
	// lastWrite is the last consent write whose answer the test asked the
	// consent read replica for: asked again while the writer is down.
	lastWrite written
}

// workload is a rendered StatefulSet or Deployment, whose pods the test
// runs.
type workload struct {
	name     string
	template *corev1.PodTemplateSpec
	// claims are a StatefulSet's volumeClaimTemplates: the pod's
	// persistent volumes.
	claims []corev1.PersistentVolumeClaim
	// serviceName is a StatefulSet's governing Service, under which its
	// pods have names of their own (nats-0.nats-cluster).
	serviceName string
}

// localPod is one pod of a rendered StatefulSet or Deployment, run as a
// process.
type localPod struct {
	name  string
	w     *workload
	c     *corev1.Container
	root  string
	host  string        // the pod's IP address: 127.0.0.1, or its own in a network namespace
	ports map[int32]int // containerPort → port on host
	// mounts maps each volume mount's path to the folder standing in for it.
	mounts map[string]string
	proc   *process
}

// addr returns the address (host:port) standing in for the container
// port called name (or numbered so).
func (p *localPod) addr(nameOrNumber string) (string, bool) {
	for _, cp := range p.c.Ports {
		if cp.Name == nameOrNumber || strconv.Itoa(int(cp.ContainerPort)) == nameOrNumber {
			return net.JoinHostPort(p.host, strconv.Itoa(p.ports[cp.ContainerPort])), true
		}
	}
	return "", false
}

// freePort returns a port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// buildTopologyBinaries builds, in one go build, the four deployables, the
// lethe CLI, nats-server from the version this module pins (the version
// of the overlay's image, TestNATSConfigIsTheShippedOne checks) and the
// test's SDK system, with the race detector when the test has it (so the
// packages the test already compiled are reused, and a race in any process
// fails the test).
func buildTopologyBinaries(t *testing.T, dir string) {
	t.Helper()
	if prebuilt := os.Getenv(topologyBinEnv); prebuilt != "" {
		// Built by the test that runs this one in a network namespace,
		// where the go command may not reach its module proxy.
		if err := os.Symlink(prebuilt, dir); err != nil {
			t.Fatal(err)
		}
		return
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	for svc := range services {
		args = append(args, "github.com/lethe-privacy/lethe/services/"+svc+"/cmd/lethe-"+svc)
	}
	args = append(args, "github.com/lethe-privacy/lethe/tools/lethe", "github.com/nats-io/nats-server/v2",
		"github.com/lethe-privacy/lethe/deploy/internal/testsystem")
	cmd := exec.Command("go", args...)
	cmd.Dir = deploy.Dir()
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("built the binaries in %s", time.Since(start).Round(time.Second))
}

// makeCerts runs the operator's certificate script, with loopback and
// the NATS nodes' addresses as extra names of every server certificate
// (the processes dial each other at these, where a cluster dials a
// Service's name).
func makeCerts(t *testing.T, out string, hosts ...string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("the topology test makes its certificates with deploy/certs/make-certs.sh, which needs openssl: install it (.ci/run does)")
	}
	args := []string{"--out", out, "--extra-name", "127.0.0.1"}
	for _, h := range hosts {
		args = append(args, "--extra-name", h)
	}
	for _, s := range topologySystems {
		args = append(args, s+"@clio")
	}
	cmd := exec.Command(filepath.Join(deploy.Dir(), "certs", "make-certs.sh"), args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make-certs.sh: %v\n%s", err, b)
	}
}

// addSystemUser adds system@tenant to auth.conf as deploy/README.md's
// "Adding a system" says: a copy of the newsletter@clio block with the
// system, the tenant and the password variable replaced.
func addSystemUser(t *testing.T, authConf, system, tenant string) string {
	t.Helper()
	start := strings.Index(authConf, "  {\n    user: \"newsletter@clio\"")
	if start < 0 {
		t.Fatal("auth.conf has no newsletter@clio block to copy for another system (deploy/README.md, Adding a system)")
	}
	end := strings.Index(authConf[start:], "\n  }\n")
	if end < 0 {
		t.Fatal("auth.conf: the newsletter@clio block does not end")
	}
	block := authConf[start : start+end+len("\n  }\n")]
	user := system + "@" + tenant
	copied := strings.NewReplacer(
		"newsletter@clio", user,
		"lethe.clio.", "lethe."+tenant+".",
		"outcome.newsletter", "outcome."+system,
		natsauth.PasswordVariable("newsletter@clio"), natsauth.PasswordVariable(user),
	).Replace(block)
	return authConf[:start+len(block)] + copied + authConf[start+len(block):]
}

// randomHex is a password as deploy/README.md generates them.
func randomHex(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startTopology builds the binaries and certificates, renders the
// production overlay, creates what an operator creates (Secrets), and
// starts the NATS cluster, the four services, a consent read replica and
// the two systems,
// waiting for each to be ready by the overlay's own readiness probes.
func startTopology(t *testing.T) *topology {
	t.Helper()
	dir, err := os.MkdirTemp("", "lethe-topology-")
	if err != nil {
		t.Fatal(err)
	}
	tp := &topology{t: t, dir: dir, bin: filepath.Join(dir, "bin"), certs: filepath.Join(dir, "certs"),
		byName: map[string]*localPod{}, secrets: map[string]map[string][]byte{}, systems: map[string]*process{}}
	t.Cleanup(func() {
		tp.stopAll()
		if t.Failed() {
			tp.dumpLogs()
			t.Logf("the topology's files are kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	buildTopologyBinaries(t, tp.bin)
	tp.net = joinTopologyNet(t)
	makeCerts(t, tp.certs, tp.net.hosts()...)
	tp.prod = render(t, "overlays/production")

	// The Secrets an operator creates (deploy/README.md): the key pairs
	// from the script's folders, and a password for every NATS user of
	// the configuration the NATS pods mount.
	for _, name := range []string{"lethe-consent-tls", "lethe-dsar-tls", "lethe-registry-tls", "lethe-retention-tls", "nats-tls"} {
		tp.secrets[name] = tp.readCertFolder(name)
	}
	natsConfig := tp.prod.configMap(t, "nats-config")
	natsConfig.Data["auth.conf"] = addSystemUser(t, natsConfig.Data["auth.conf"], "mailer", "clio")
	users := map[string][]byte{}
	for _, m := range regexp.MustCompile(`(?m)^\s*password:\s*\$(NATS_PASSWORD_[A-Z0-9_]+)\s*$`).FindAllStringSubmatch(natsConfig.Data["auth.conf"], -1) {
		users[m[1]] = []byte(randomHex(t))
	}
	tp.secrets["lethe-nats-users"] = users

	// Every pod of every StatefulSet and one of the consent read
	// replicas' Deployment, with its ports first: addresses resolve
	// through Services to any pod's ports.
	for _, w := range tp.workloads() {
		replicas := int32(1)
		if w.replicas != nil {
			replicas = *w.replicas
		}
		for n := range replicas {
			p := &localPod{name: fmt.Sprintf("%s-%d", w.name, n), w: w.workload, c: &w.template.Spec.Containers[0],
				host: "127.0.0.1", ports: map[int32]int{}, mounts: map[string]string{}}
			p.root = filepath.Join(dir, "pods", p.name)
			if w.name == "nats" && tp.net != nil {
				// A network namespace of its own: its own address and
				// the container's ports, as in a pod.
				p.host = tp.net.addNode(t, p.name)
				for _, cp := range p.c.Ports {
					p.ports[cp.ContainerPort] = int(cp.ContainerPort)
				}
			} else {
				for _, cp := range p.c.Ports {
					p.ports[cp.ContainerPort] = freePort(t)
				}
			}
			tp.pods = append(tp.pods, p)
			tp.byName[p.name] = p
		}
	}
	for _, p := range tp.pods {
		tp.preparePod(p)
	}

	// NATS first, all nodes at once (podManagementPolicy Parallel), then
	// the services: a service's start provisions the R3 stream, which
	// needs the cluster's quorum. The consent read replicas last: a
	// replica starts from its writer's snapshot (startReplicas).
	var nats, lethe, replicas []*localPod
	for _, p := range tp.pods {
		switch p.w.name {
		case "nats":
			nats = append(nats, p)
		case consentReplicas:
			replicas = append(replicas, p)
		default:
			lethe = append(lethe, p)
		}
	}
	for _, p := range nats {
		p.proc.start(t)
	}
	tp.waitReady(nats...)
	for _, p := range lethe {
		p.proc.start(t)
	}
	tp.waitReady(lethe...)
	tp.startReplicas(replicas)
	tp.writeOperatorConfig()
	for _, s := range topologySystems {
		tp.startSystem(s)
	}
	return tp
}

// consentReplicas is the Deployment of the consent read replicas.
const consentReplicas = "lethe-consent-replica"

// runWorkload is a workload and how many of its pods the test runs.
type runWorkload struct {
	*workload
	replicas *int32
}

// workloads are what the test runs: every StatefulSet with its replicas,
// and one pod of the consent read replicas' Deployment. Its autoscaler
// keeps two or more in a cluster; one shows what a replica must do here
// (start from the writer's snapshot over the cluster, answer with its own
// identity, go on answering while the writer is down) at the cost of one
// process. The overlay's other Deployment, lethe-connect, is not part of
// the test.
func (tp *topology) workloads() []runWorkload {
	var ws []runWorkload
	for i := range tp.prod.statefulSets {
		sts := &tp.prod.statefulSets[i]
		ws = append(ws, runWorkload{&workload{name: sts.Name, template: &sts.Spec.Template, claims: sts.Spec.VolumeClaimTemplates,
			serviceName: sts.Spec.ServiceName}, sts.Spec.Replicas})
	}
	for i := range tp.prod.deployments {
		if d := &tp.prod.deployments[i]; d.Name == consentReplicas {
			one := int32(1)
			ws = append(ws, runWorkload{&workload{name: d.Name, template: &d.Spec.Template}, &one})
		}
	}
	if len(ws) == len(tp.prod.statefulSets) {
		tp.t.Fatalf("the production overlay renders no Deployment %s", consentReplicas)
	}
	return ws
}

// startReplicas starts the consent read replicas once their writer's
// first replication snapshot is in the snapshot bucket, and waits until
// they are ready. A replica restores that snapshot before it serves and
// exits when there is none yet, which a cluster's kubelet answers by
// restarting it; the test waits instead, so that any exit of a replica's
// own counts as a crash.
func (tp *topology) startReplicas(replicas []*localPod) {
	t := tp.t
	t.Helper()
	waited := time.Now()
	bucket := "OBJ_" + broker.ConsentSnapshotBucket // the object store's stream
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		r, err := streamReplicaOf(tp.byName["nats-0"], bucket)
		if err == nil && r.State.Msgs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consent writer took no replication snapshot within a minute (%s on nats-0: %+v, %v)", bucket, r.State, err)
		}
	}
	began := time.Now()
	for _, p := range replicas {
		p.proc.start(t)
	}
	tp.waitReady(replicas...)
	t.Logf("the writer's first snapshot %s after the services were ready; the consent read replica ready %s later",
		began.Sub(waited).Round(10*time.Millisecond), time.Since(began).Round(10*time.Millisecond))
}

// readCertFolder returns the files of one of make-certs.sh's folders.
func (tp *topology) readCertFolder(name string) map[string][]byte {
	tp.t.Helper()
	files := map[string][]byte{}
	for _, key := range []string{"tls.crt", "tls.key", "ca.crt"} {
		b, err := os.ReadFile(filepath.Join(tp.certs, name, key))
		if err != nil {
			tp.t.Fatalf("make-certs.sh made no %s/%s: %v", name, key, err)
		}
		files[key] = b
	}
	return files
}

// preparePod gives p a folder for every volume it mounts, holding what a
// cluster would put there, and the process its image's entry point runs,
// with the container's arguments and environment mapped to this machine.
func (tp *topology) preparePod(p *localPod) {
	t := tp.t
	t.Helper()
	spec := &p.w.template.Spec
	claims := map[string]bool{}
	for _, c := range p.w.claims {
		claims[c.Name] = true
	}
	for _, m := range p.c.VolumeMounts {
		host := filepath.Join(p.root, "volumes", m.Name)
		if err := os.MkdirAll(host, 0o700); err != nil {
			t.Fatal(err)
		}
		p.mounts[m.MountPath] = host
		if claims[m.Name] {
			continue // the pod's persistent volume: kept across restarts
		}
		var vol *corev1.Volume
		for i := range spec.Volumes {
			if spec.Volumes[i].Name == m.Name {
				vol = &spec.Volumes[i]
			}
		}
		switch {
		case vol == nil:
			t.Fatalf("%s mounts %s, which is neither a volume of the pod nor a claim template", p.name, m.Name)
		case vol.EmptyDir != nil:
		case vol.ConfigMap != nil:
			data := map[string][]byte{}
			for k, v := range tp.prod.configMap(t, vol.ConfigMap.Name).Data {
				data[k] = []byte(v)
			}
			tp.writeVolume(p, m.Name, host, "ConfigMap "+vol.ConfigMap.Name, data, vol.ConfigMap.Items)
		case vol.Secret != nil:
			data, ok := tp.secrets[vol.Secret.SecretName]
			if !ok {
				t.Fatalf("%s mounts Secret %s, which deploy/README.md does not tell an operator to create", p.name, vol.Secret.SecretName)
			}
			tp.writeVolume(p, m.Name, host, "Secret "+vol.Secret.SecretName, data, vol.Secret.Items)
		default:
			t.Fatalf("%s: volume %s is of a kind the topology test cannot provide", p.name, m.Name)
		}
	}
	if p.w.name == "nats" {
		tp.localizeNATSConfig(p)
	}

	env := tp.podEnv(p)
	args := make([]string, len(p.c.Args))
	for i, a := range p.c.Args {
		args[i] = tp.localize(p, "argument", a)
	}
	var binary string
	switch {
	case strings.HasPrefix(p.c.Image, "nats:"):
		binary = "nats-server"
	case strings.Contains(p.c.Image, "/lethe-") || strings.HasPrefix(p.c.Image, "lethe-"):
		binary = strings.SplitN(filepath.Base(p.c.Image), ":", 2)[0]
	default:
		t.Fatalf("%s: image %s is no binary the test builds", p.name, p.c.Image)
	}
	if len(p.c.Command) > 0 {
		t.Fatalf("%s: the container overrides its image's command %v; the test runs the image's binary", p.name, p.c.Command)
	}
	p.proc = &process{name: p.name, path: filepath.Join(tp.bin, binary), args: args, env: env,
		log: filepath.Join(tp.dir, "logs", p.name+".log")}
	if p.w.name == "nats" && tp.net != nil {
		tp.net.enter(p.name, p.proc)
	}
}

// writeVolume writes what a Secret or ConfigMap volume holds: every key,
// or only its items under their paths.
func (tp *topology) writeVolume(p *localPod, vol, host, source string, data map[string][]byte, items []corev1.KeyToPath) {
	t := tp.t
	t.Helper()
	files := map[string][]byte{}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = v
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			t.Fatalf("%s: volume %s wants key %s of %s, which has no such key", p.name, vol, it.Key, source)
		}
		files[it.Path] = v
	}
	for name, v := range files {
		path := filepath.Join(host, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, v, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// podEnv is the container's environment as the kubelet sets it: envFrom
// first, then env, a $(VAR) replaced by an earlier variable's value, a
// field or a Secret's key resolved; then every value localized.
func (tp *topology) podEnv(p *localPod) []string {
	t := tp.t
	t.Helper()
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, from := range p.c.EnvFrom {
		if from.SecretRef == nil {
			t.Fatalf("%s: envFrom of a kind the test cannot provide", p.name)
		}
		data, ok := tp.secrets[from.SecretRef.Name]
		if !ok {
			t.Fatalf("%s: envFrom Secret %s, which deploy/README.md does not tell an operator to create", p.name, from.SecretRef.Name)
		}
		for k, v := range data {
			set(from.Prefix+k, string(v))
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range p.c.Env {
		switch vf := e.ValueFrom; {
		case vf == nil:
			set(e.Name, ref.ReplaceAllStringFunc(e.Value, func(m string) string {
				if v, ok := env[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			}))
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
			set(e.Name, p.name)
		case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.namespace":
			set(e.Name, topologyNamespace)
		case vf.SecretKeyRef != nil:
			v, ok := tp.secrets[vf.SecretKeyRef.Name][vf.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("%s: %s comes from key %s of Secret %s, which deploy/README.md does not tell an operator to create",
					p.name, e.Name, vf.SecretKeyRef.Key, vf.SecretKeyRef.Name)
			}
			set(e.Name, string(v))
		default:
			t.Fatalf("%s: %s comes from a source the test cannot provide", p.name, e.Name)
		}
	}
	var out []string
	for _, k := range order {
		v := env[k]
		if !strings.HasPrefix(k, "NATS_PASSWORD_") { // secrets are values, not addresses or paths
			v = tp.localize(p, k, v)
		}
		out = append(out, k+"="+v)
	}
	return out
}

var (
	listenAddr  = regexp.MustCompile(`^:(\d+)$`)
	serviceAddr = regexp.MustCompile(`^(?:([a-z][a-z0-9+.-]*)://)?([a-z0-9]([a-z0-9.-]*[a-z0-9])?):(\d+)$`)
)

// localize maps one value of the manifest to this machine: a path to the
// folder standing in for its volume, a listen address ":port" to the
// pod's loopback port, and "[scheme://]service:port" (comma-separated) to
// the addresses of the pods the Service selects. Anything else is
// kept. A path no volume provides, or an address of no Service, fails.
func (tp *topology) localize(p *localPod, what, v string) string {
	t := tp.t
	t.Helper()
	if strings.HasPrefix(v, "/") {
		return tp.mapPath(p, what, v)
	}
	if m := listenAddr.FindStringSubmatch(v); m != nil {
		addr, ok := p.addr(m[1])
		if !ok {
			t.Fatalf("%s: %s=%s listens on %s, which is no port of the container", p.name, what, v, m[1])
		}
		return addr
	}
	parts := strings.Split(v, ",")
	if !serviceAddr.MatchString(strings.TrimSpace(parts[0])) {
		return v
	}
	var out []string
	for _, part := range parts {
		m := serviceAddr.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			t.Fatalf("%s: %s=%s: %q is not an address", p.name, what, v, part)
		}
		port, _ := strconv.Atoi(m[4])
		addrs, err := tp.resolve(m[2], int32(port))
		if err != nil {
			t.Fatalf("%s: %s=%s: %v", p.name, what, v, err)
		}
		for _, addr := range addrs {
			if m[1] != "" {
				addr = m[1] + "://" + addr
			}
			out = append(out, addr)
		}
	}
	return strings.Join(out, ",")
}

// mapPath maps a path in the container to the folder standing in for the
// volume mounted there.
func (tp *topology) mapPath(p *localPod, what, path string) string {
	best := ""
	for mp := range p.mounts {
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		tp.t.Fatalf("%s: %s names %s, which no volume of the pod provides", p.name, what, path)
	}
	return filepath.Join(p.mounts[best], strings.TrimPrefix(path, best))
}

// resolve returns the addresses behind host:port as cluster DNS
// would: host is a Service (or service.namespace.svc), or a pod's name
// under its StatefulSet's headless Service (nats-0.nats-cluster); the
// Service's port leads to its target port on each pod it selects.
func (tp *topology) resolve(host string, port int32) ([]string, error) {
	host = strings.TrimSuffix(strings.TrimSuffix(host, ".cluster.local"), "."+topologyNamespace+".svc")
	podName, svcName, isPod := strings.Cut(host, ".")
	if !isPod {
		svcName = host
	}
	var svc *corev1.Service
	for i := range tp.prod.services {
		if tp.prod.services[i].Name == svcName {
			svc = &tp.prod.services[i]
		}
	}
	if svc == nil {
		return nil, fmt.Errorf("%s is no rendered Service", svcName)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return nil, fmt.Errorf("Service %s has no port %d", svcName, port)
	}
	target := sp.TargetPort.String()
	if sp.TargetPort.IntValue() == 0 && sp.TargetPort.StrVal == "" {
		target = strconv.Itoa(int(port))
	}
	var addrs []string
	for _, p := range tp.pods {
		if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, p.w.template.Labels) {
			continue
		}
		if isPod && (p.name != podName || p.w.serviceName != svcName) {
			continue
		}
		addr, ok := p.addr(target)
		if !ok {
			return nil, fmt.Errorf("Service %s port %d targets %s, which pod %s does not have", svcName, port, target, p.name)
		}
		addrs = append(addrs, addr)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("Service %s selects no pod", host)
	}
	return addrs, nil
}

// localizeNATSConfig changes in the NATS configuration what the pod
// provides and nothing else: the ports it listens on (its container
// ports, on its address), the route addresses (resolved like any address),
// and the paths of its store, pid file and certificates (in its volumes).
func (tp *topology) localizeNATSConfig(p *localPod) {
	t := tp.t
	t.Helper()
	dir, ok := p.mounts["/etc/nats"]
	if !ok {
		t.Fatalf("%s: the NATS configuration is not mounted at /etc/nats", p.name)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: no NATS configuration in %s: %v", p.name, dir, err)
	}
	portLine := regexp.MustCompile(`(?m)^(\s*)(port|http_port):\s*(\d+)\s*$`)
	route := regexp.MustCompile(`nats-route://([a-z0-9.-]+):(\d+)`)
	pathLine := regexp.MustCompile(`(?m)^(\s*)(store_dir|pid_file|cert_file|key_file|ca_file):\s*"?(/[^"\s]+)"?\s*$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := portLine.ReplaceAllStringFunc(string(b), func(line string) string {
			m := portLine.FindStringSubmatch(line)
			addr, ok := p.addr(m[3])
			if !ok {
				t.Fatalf("%s: %s: %s %s is no port of the container", p.name, filepath.Base(f), m[2], m[3])
			}
			key := "listen"
			if m[2] == "http_port" {
				key = "http"
			}
			return fmt.Sprintf(`%s%s: %q`, m[1], key, addr)
		})
		s = route.ReplaceAllStringFunc(s, func(u string) string {
			m := route.FindStringSubmatch(u)
			port, _ := strconv.Atoi(m[2])
			addrs, err := tp.resolve(m[1], int32(port))
			if err != nil || len(addrs) != 1 {
				t.Fatalf("%s: route %s: %v", p.name, u, err)
			}
			return "nats-route://" + addrs[0]
		})
		s = pathLine.ReplaceAllStringFunc(s, func(line string) string {
			m := pathLine.FindStringSubmatch(line)
			return fmt.Sprintf(`%s%s: %q`, m[1], m[2], tp.mapPath(p, filepath.Base(f)+" "+m[2], m[3]))
		})
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// waitReady waits until each pod passes its startup probe and then its
// readiness probe, as the kubelet asks them, within a minute.
func (tp *topology) waitReady(pods ...*localPod) {
	t := tp.t
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, p := range pods {
		probes := []*corev1.Probe{p.c.ReadinessProbe}
		if p.c.StartupProbe != nil {
			probes = []*corev1.Probe{p.c.StartupProbe, p.c.ReadinessProbe}
		}
		for len(probes) > 0 {
			err := tp.probe(p, probes[0])
			if err == nil {
				probes = probes[1:]
				continue
			}
			if exited, out := p.proc.exited(); exited && !p.proc.supervised() {
				t.Fatalf("%s exited before it was ready: %v\n%s", p.name, err, out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is not ready within a minute: %v\n%s", p.name, err, p.proc.tail())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// probe runs a readiness probe of the manifest against the pod's ports.
func (tp *topology) probe(p *localPod, pr *corev1.Probe) error {
	if pr == nil {
		tp.t.Fatalf("%s has no readiness probe", p.name)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		addr, ok := p.addr(pr.HTTPGet.Port.String())
		if !ok {
			tp.t.Fatalf("%s: the probe's port %s is no port of the container", p.name, pr.HTTPGet.Port.String())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+pr.HTTPGet.Path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", pr.HTTPGet.Path, resp.Status, body)
		}
		return nil
	case pr.GRPC != nil:
		addr, ok := p.addr(strconv.Itoa(int(pr.GRPC.Port)))
		if !ok {
			tp.t.Fatalf("%s: the probe's port %d is no port of the container", p.name, pr.GRPC.Port)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		name := ""
		if pr.GRPC.Service != nil {
			name = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %q: %s", name, resp.Status)
		}
		return nil
	}
	tp.t.Fatalf("%s: a readiness probe of a kind the test cannot run", p.name)
	return nil
}

// serviceAddr returns the address of lethe-<svc>'s gRPC port, as its
// Service resolves.
func (tp *topology) serviceAddr(svc string) string {
	addrs, err := tp.resolve("lethe-"+svc, services[svc])
	if err != nil || len(addrs) != 1 {
		tp.t.Fatalf("lethe-%s:%d: %v", svc, services[svc], err)
	}
	return addrs[0]
}

// natsURL returns the NATS Service's client URLs, as a cluster client
// outside Lethe's pods reaches them.
func (tp *topology) natsURL() string {
	addrs, err := tp.resolve("nats", 4222)
	if err != nil {
		tp.t.Fatal(err)
	}
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "tls://"+a)
	}
	return strings.Join(urls, ",")
}

// writeOperatorConfig writes the lethe CLI's context: the four services'
// addresses and the operator's certificate from make-certs.sh.
func (tp *topology) writeOperatorConfig() {
	op := filepath.Join(tp.certs, "lethe-operator")
	var b strings.Builder
	fmt.Fprintf(&b, "currentContext: topology\ncontexts:\n  - name: topology\n")
	for _, svc := range []string{"registry", "consent", "dsar", "retention"} {
		fmt.Fprintf(&b, "    %s: %s\n", svc, tp.serviceAddr(svc))
	}
	fmt.Fprintf(&b, "    tls:\n      ca: %s\n      cert: %s\n      key: %s\n",
		filepath.Join(op, "ca.crt"), filepath.Join(op, "tls.crt"), filepath.Join(op, "tls.key"))
	tp.operator = filepath.Join(tp.dir, "operator.yaml")
	if err := os.WriteFile(tp.operator, []byte(b.String()), 0o600); err != nil {
		tp.t.Fatal(err)
	}
}

// startSystem starts the SDK system as <system>@clio with its own
// certificate and its password from the Secret, as its own deployment
// would mount them.
func (tp *topology) startSystem(system string) {
	t := tp.t
	user := system + "@clio"
	certs := filepath.Join(tp.certs, "system-"+system+"-clio")
	password := filepath.Join(tp.dir, "systems", system, "password")
	if err := os.MkdirAll(filepath.Dir(password), 0o700); err != nil {
		t.Fatal(err)
	}
	pw, ok := tp.secrets["lethe-nats-users"][natsauth.PasswordVariable(user)]
	if !ok {
		t.Fatalf("no password for %s in lethe-nats-users", user)
	}
	if err := os.WriteFile(password, pw, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &process{name: user, path: filepath.Join(tp.bin, "testsystem"), log: filepath.Join(tp.dir, "logs", system+".log"),
		args: []string{"--system", system, "--tenant", "clio", "--data", filepath.Join(tp.dir, "systems", system, "data"),
			"--nats-url", tp.natsURL(), "--nats-password-file", password, "--ack-wait", systemAckWait.String(),
			"--nats-ca", filepath.Join(certs, "ca.crt"), "--nats-cert", filepath.Join(certs, "tls.crt"), "--nats-key", filepath.Join(certs, "tls.key")}}
	tp.systems[system] = p
	p.start(t)
}

// lethe runs the lethe CLI with the operator's context.
func (tp *topology) lethe(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(tp.bin, "lethe"), args...)
	cmd.Env = append(os.Environ(), "LETHE_CONFIG="+tp.operator)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("lethe %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.String(), nil
}

// mustLethe runs the CLI and fails the test if it does not succeed.
func (tp *topology) mustLethe(args ...string) string {
	tp.t.Helper()
	out, err := tp.lethe(args...)
	if err != nil {
		tp.t.Fatal(err)
	}
	return out
}

// operatorCreds are the operator's mutual TLS credentials for gRPC.
func (tp *topology) operatorCreds() credentials.TransportCredentials { return tp.operatorCredsFor("") }

// operatorCredsFor are the operator's credentials for a server whose
// certificate must carry serverName (the address's host when empty).
func (tp *topology) operatorCredsFor(serverName string) credentials.TransportCredentials {
	op := filepath.Join(tp.certs, "lethe-operator")
	cert, err := tls.LoadX509KeyPair(filepath.Join(op, "tls.crt"), filepath.Join(op, "tls.key"))
	if err != nil {
		tp.t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(op, "ca.crt"))
	if err != nil {
		tp.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: serverName})
}

// replicaLag reads the consent read replica's lag from its metrics port,
// as Prometheus scrapes it (lethe.consent.replica.lag).
func (tp *topology) replicaLag(t *testing.T) string {
	t.Helper()
	addr := mustAddr(t, tp.byName[consentReplicas+"-0"], "metrics")
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("the consent replica's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^lethe_consent_replica_lag_seconds(?:\{[^}]*\})? (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("the consent replica's metrics show no lethe_consent_replica_lag_seconds:\n%s", body)
	}
	return string(m[1]) + "s"
}

// systemCounts stops the systems and returns, for each, how often it
// applied each request ("<kind> <cause> <subject>").
func (tp *topology) systemCounts() map[string]map[string]uint64 {
	t := tp.t
	t.Helper()
	counts := map[string]map[string]uint64{}
	for _, system := range topologySystems {
		p := tp.systems[system]
		p.stop(t)
		out, err := exec.Command(p.path, "--system", system, "--tenant", "clio", "--data", filepath.Join(tp.dir, "systems", system, "data"), "--report").Output()
		if err != nil {
			t.Fatalf("%s --report: %v", system, err)
		}
		c := map[string]uint64{}
		if err := json.Unmarshal(out, &c); err != nil {
			t.Fatalf("%s --report: %v\n%s", system, err, out)
		}
		counts[system] = c
	}
	return counts
}

func (tp *topology) stopAll() {
	for _, p := range tp.systems {
		p.kill()
	}
	for _, p := range tp.pods {
		if p.proc != nil {
			p.proc.kill()
		}
	}
}

// dumpLogs prints the end of every process's log.
func (tp *topology) dumpLogs() {
	var procs []*process
	for _, p := range tp.pods {
		if p.proc != nil {
			procs = append(procs, p.proc)
		}
	}
	for _, s := range topologySystems {
		if p := tp.systems[s]; p != nil {
			procs = append(procs, p)
		}
	}
	for _, p := range procs {
		tp.t.Logf("---- %s (%s)\n%s", p.name, p.log, p.tail())
	}
}

// checkNoRaces fails the test if a race-enabled process reported a race.
func (tp *topology) checkNoRaces() {
	logs, _ := filepath.Glob(filepath.Join(tp.dir, "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			tp.t.Errorf("%s reports a data race", filepath.Base(l))
		}
	}
}

// process is one OS process of the topology, restartable. Its output goes
// to a log file that outlives restarts.
type process struct {
	name, path string
	args, env  []string
	log        string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	file    *os.File
	// stopped is set when the test ends the process, so that an exit of
	// its own can be told apart.
	stopped bool
	// supervise restarts the process when it exits on its own.
	supervise bool
	// exits counts the exits of its own.
	exits int
}

// start starts the process unless it runs; env nil means the test's own
// environment.
func (p *process) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = false
	if err := p.startLocked(); err != nil {
		t.Fatal(err)
	}
}

// startLocked starts the process unless it runs. When it ends without the
// test ending it and supervise is set, it is started again a second later,
// as the kubelet restarts a container (restartPolicy Always), and counted.
func (p *process) startLocked() error {
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return nil // running
		}
	}
	if err := os.MkdirAll(filepath.Dir(p.log), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), p.name)
	cmd := exec.Command(p.path, p.args...)
	if p.env != nil {
		cmd.Env = p.env
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.file, p.exitErr = cmd, done, f, nil
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		if !p.stopped {
			p.exits++
		}
		restart := !p.stopped && p.supervise
		p.mu.Unlock()
		f.Close()
		close(done)
		if !restart {
			return
		}
		time.Sleep(time.Second)
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.stopped {
			// Its last words, which a passing run would delete with the
			// log: why it exited is the finding.
			last := p.tail()
			if len(last) > 1500 {
				last = last[len(last)-1500:]
			}
			fmt.Fprintf(os.Stderr, "topology: %s exited on its own (%v); restarting it as the kubelet would; its log ended:\n%s\n", p.name, err, last)
			_ = p.startLocked()
		}
	}()
	return nil
}

// signal sends sig and, for a signal that ends the process, waits for it.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.stopped = true
	}
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not stop within 30s of %s", p.name, sig)
		}
	}
}

// kill9 kills the process as a node failure does: SIGKILL, no clean-up.
func (p *process) kill9(t *testing.T) { p.signal(t, syscall.SIGKILL) }

// stop ends the process gracefully (SIGTERM).
func (p *process) stop(t *testing.T) { p.signal(t, syscall.SIGTERM) }

// kill ends the process at the end of the test, without a testing.T.
func (p *process) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopped = true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// exited reports whether the process has ended, with its log's end.
func (p *process) exited() (bool, string) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true, p.tail()
	default:
		return false, ""
	}
}

// exitsOfItsOwn counts the times the process ended without the test
// ending it.
func (p *process) exitsOfItsOwn() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits
}

// supervised reports whether the process is restarted when it exits.
func (p *process) supervised() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.supervise
}

// superviseFromNow restarts the process whenever it exits on its own.
func (p *process) superviseFromNow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.supervise = true
}

// tail is the end of the process's log.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}
