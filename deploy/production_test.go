package deploy_test

import (
	"flag"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/lethe-privacy/lethe/platform/flagenv"
	"github.com/lethe-privacy/lethe/platform/service"
)

// containerEnv returns c's environment as the kubelet gives it to the
// process: a $(VAR) in a value is replaced by an earlier variable's value,
// and stays literal when no earlier variable defines it. A value from a
// Secret or a field is "(from <source>)", which no check reads.
func containerEnv(c *corev1.Container) map[string]string {
	env := map[string]string{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "(from a reference)"
			continue
		}
		env[e.Name] = ref.ReplaceAllStringFunc(e.Value, func(m string) string {
			if v, ok := env[m[2:len(m)-1]]; ok {
				return v
			}
			return m
		})
	}
	return env
}

// withProcessEnv runs fn with exactly env's LETHE_* variables set in the
// test process, as the container's process would see them.
func withProcessEnv(t *testing.T, env map[string]string, fn func()) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, service.EnvPrefix+"_") {
			t.Setenv(name, "") // restored when the test ends
			if err := os.Unsetenv(name); err != nil {
				t.Fatal(err)
			}
		}
	}
	var set []string
	for name, value := range env {
		if strings.HasPrefix(name, service.EnvPrefix+"_") {
			t.Setenv(name, value)
			set = append(set, name)
		}
	}
	defer func() {
		for _, name := range set {
			_ = os.Unsetenv(name)
		}
	}()
	fn()
}

// productionRefusals runs the deployable's own production checks
// (service.Refusals, what a start refuses before it reads a file) on the
// container's arguments and environment.
func productionRefusals(t *testing.T, svc string, c *corev1.Container, env map[string]string) error {
	t.Helper()
	var err error
	withProcessEnv(t, env, func() { err = service.Refusals(factories[svc], c.Args) })
	return err
}

// TestProductionManifestsSatisfyTheBinaries runs each deployable's own
// production checks on the environment and arguments the rendered
// production overlay gives its container, so that a manifest that lacks
// an address, a secret or a flag its binary needs in production fails
// here rather than at the first start in a cluster. What the checks
// cannot see without the real files or network is checked against the
// manifest instead: every file a flag names is in a mounted volume (for a
// Secret with items, one of its items), and every address a flag names is
// a rendered Service's port.
func TestProductionManifestsSatisfyTheBinaries(t *testing.T) {
	prod := render(t, "overlays/production")
	for svc := range services {
		sts := prod.statefulSet(t, "lethe-"+svc)
		pod := &sts.Spec.Template.Spec
		c := &pod.Containers[0]
		where := "production: lethe-" + svc
		env := containerEnv(c)
		if err := productionRefusals(t, svc, c, env); err != nil {
			t.Errorf("%s: the binary refuses the manifest's configuration:\n%v", where, err)
		}

		// The check can fail: without any one of the variables the
		// production checks require, the same binary refuses.
		for _, name := range []string{"LETHE_TLS_CA", "LETHE_AUTHZ_POLICY", "LETHE_TLS_CERT"} {
			without := maps.Clone(env)
			delete(without, name)
			if productionRefusals(t, svc, c, without) == nil {
				t.Errorf("%s: a manifest without %s passes the production checks", where, name)
			}
		}
		for _, n := range factories[svc].Neighbours {
			without := maps.Clone(env)
			name := flagenv.Name(service.EnvPrefix, n.Flag())
			delete(without, name)
			if err := productionRefusals(t, svc, c, without); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s: without %s the production checks say %v, want them to name it", where, name, err)
			}
		}

		checkFlagValues(t, prod, where, svc, pod, c, env)
	}
	// The consent read replicas run the consent binary in the replica
	// role: the same checks.
	i := slices.IndexFunc(prod.deployments, func(d appsv1.Deployment) bool { return d.Name == "lethe-consent-replica" })
	if i < 0 {
		t.Fatal("production: no Deployment lethe-consent-replica")
	}
	pod := &prod.deployments[i].Spec.Template.Spec
	c := &pod.Containers[0]
	env := containerEnv(c)
	if err := productionRefusals(t, "consent", c, env); err != nil {
		t.Errorf("production: lethe-consent-replica: the binary refuses the manifest's configuration:\n%v", err)
	}
	checkFlagValues(t, prod, "production: lethe-consent-replica", "consent", pod, c, env)
}

// checkFlagValues checks what the flags svc's container sets name: every
// file is provided by a mounted volume, every address is a rendered
// Service's port.
func checkFlagValues(t *testing.T, prod *rendered, where, svc string, pod *corev1.PodSpec, c *corev1.Container, env map[string]string) {
	t.Helper()
	service.FlagSet(factories[svc]).VisitAll(func(f *flag.Flag) {
		value, ok := env[flagenv.Name(service.EnvPrefix, f.Name)]
		if !ok {
			return
		}
		switch {
		case strings.HasPrefix(value, "/"):
			checkFileProvided(t, where, pod, c, f.Name, value)
		case strings.HasSuffix(f.Name, "-addr"):
			checkAddress(t, prod, where, f.Name, value)
		case f.Name == "nats-url":
			for _, u := range strings.Split(value, ",") {
				_, hostPort, _ := strings.Cut(strings.TrimSpace(u), "://")
				checkAddress(t, prod, where, f.Name, hostPort)
			}
		}
	})
}

// checkFileProvided fails unless path, which --flag names, is provided by
// a volume mounted in c: the data claim itself, or a file of a Secret or
// ConfigMap (one of its items, when it lists them).
func checkFileProvided(t *testing.T, where string, pod *corev1.PodSpec, c *corev1.Container, flagName, path string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return // a folder flag: the mount itself (--data /data)
		}
	}
	vol := mountedFrom(pod, c, path)
	if vol == nil {
		t.Errorf("%s: --%s %s is in no mounted volume", where, flagName, path)
		return
	}
	var items []corev1.KeyToPath
	switch {
	case vol.Secret != nil:
		items = vol.Secret.Items
	case vol.ConfigMap != nil:
		items = vol.ConfigMap.Items
	}
	if len(items) == 0 {
		return
	}
	var mountPath string
	for _, m := range c.VolumeMounts {
		if m.Name == vol.Name {
			mountPath = strings.TrimSuffix(m.MountPath, "/") + "/"
		}
	}
	if !slices.ContainsFunc(items, func(i corev1.KeyToPath) bool { return mountPath+i.Path == path }) {
		t.Errorf("%s: --%s %s is not one of volume %s's items", where, flagName, path, vol.Name)
	}
}

// checkAddress fails unless addr, which --flag names, is a listen address
// (":port") or a rendered Service's name and one of its ports.
func checkAddress(t *testing.T, r *rendered, where, flagName, addr string) {
	t.Helper()
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: --%s %q: %v", where, flagName, addr, err)
		return
	}
	if host == "" {
		return // a listen address
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Errorf("%s: --%s %q: port: %v", where, flagName, addr, err)
		return
	}
	for _, s := range r.services {
		if s.Name == host && slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(port) }) {
			return
		}
	}
	t.Errorf("%s: --%s %q is no rendered Service's port", where, flagName, addr)
}
