package deploy_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/deploy/natsauth"
	"github.com/lethe-privacy/lethe/sdk/connection"
)

// connectFileFlags are lethe-connect's flags that name a file or folder,
// which must be in a mounted volume.
var connectFileFlags = []string{"nats-password-file", "nats-ca", "nats-cert", "nats-key", "grpc-ca", "grpc-cert", "grpc-key",
	"secrets", "data", "claims-key-file", "claims-tls-cert", "claims-tls-key"}

// TestConnectDeployment checks what lethe-connect relies on in every
// overlay: one pod at a time (one writer of the ledgers, one reader of the
// systems' consumers), every flag one its binary has, every file a flag
// names in a mounted volume, the ledgers on their claim, its own NATS user
// and password, the registry and DSAR at their Services' ports, the
// locked-down container the services have, probes on the claim check, and
// in production NATS over mutual TLS and the claim check over TLS.
func TestConnectDeployment(t *testing.T) {
	known := connectFlagNames(t)
	for _, r := range renderAll(t) {
		var d *appsv1.Deployment
		for i := range r.deployments {
			if r.deployments[i].Name == "lethe-connect" {
				d = &r.deployments[i]
			}
		}
		if d == nil {
			t.Fatalf("%s: no Deployment lethe-connect", r.name)
		}
		where := r.name + ": Deployment lethe-connect"
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("%s: replicas %v, strategy %s; want one replica, replaced (Recreate), never surged", where, d.Spec.Replicas, d.Spec.Strategy.Type)
		}
		pod := &d.Spec.Template.Spec
		c := &pod.Containers[0]
		flags := connectFlags(t, where, c, known)

		mounts := map[string]corev1.Volume{} // mount path -> volume
		for _, m := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == m.Name {
					mounts[m.MountPath] = v
				}
			}
		}
		volumeOf := func(path string) (corev1.Volume, bool) {
			for dir, v := range mounts {
				if path == dir || strings.HasPrefix(path, dir+"/") {
					return v, true
				}
			}
			return corev1.Volume{}, false
		}
		for _, f := range connectFileFlags {
			if path, ok := flags[f]; ok {
				if _, ok := volumeOf(path); !ok {
					t.Errorf("%s: --%s=%s is in no mounted volume", where, f, path)
				}
			}
		}
		if v, _ := volumeOf(flags["data"]); v.PersistentVolumeClaim == nil ||
			!slices.ContainsFunc(r.claims, func(pvc corev1.PersistentVolumeClaim) bool {
				return pvc.Name == v.PersistentVolumeClaim.ClaimName && slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce})
			}) {
			t.Errorf("%s: --data=%s is not on a rendered ReadWriteOnce claim", where, flags["data"])
		}
		if flags["nats-user"] != natsauth.ConnectUser {
			t.Errorf("%s: --nats-user=%s, want %s, the user deploy/nats/auth.conf gives it", where, flags["nats-user"], natsauth.ConnectUser)
		}
		pw, _ := volumeOf(flags["nats-password-file"])
		if pw.Secret == nil || pw.Secret.SecretName != "lethe-nats-users" || len(pw.Secret.Items) != 1 ||
			pw.Secret.Items[0].Key != natsauth.PasswordVariable(natsauth.ConnectUser) ||
			!slices.Contains(natsPasswordVariables(t), pw.Secret.Items[0].Key) {
			t.Errorf("%s: the NATS password is not %s of lethe-nats-users alone, which auth.conf refers to", where, natsauth.PasswordVariable(natsauth.ConnectUser))
		}
		for flag, svc := range map[string]string{"registry-addr": "registry", "dsar-addr": "dsar"} {
			if want := "lethe-" + svc + ":" + strconv.Itoa(int(services[svc])); flags[flag] != want {
				t.Errorf("%s: --%s=%s, want the Service's %s", where, flag, flags[flag], want)
			}
		}
		checkConnectPod(t, where, pod)
		ingressOpen := allowed(r.policies, networkingv1.PolicyTypeIngress, d.Spec.Template.Labels, map[string]string{"app": "ingress"}, 8443)
		if !ingressOpen {
			t.Errorf("%s: no NetworkPolicy admits the receivers to the claim check", where)
		}

		production := r.name != "overlays/dev"
		tlsNATS := strings.HasPrefix(flags["nats-url"], "tls://") && flags["nats-ca"] != "" && flags["nats-cert"] != "" && flags["nats-key"] != ""
		if production != tlsNATS {
			t.Errorf("%s: NATS at %s (CA %q, cert %q); production needs mutual TLS, the dev overlay's NATS has none", where, flags["nats-url"], flags["nats-ca"], flags["nats-cert"])
		}
		if !strings.HasPrefix(flags["claims-url"], "https://") || flags["claims-tls-cert"] == "" || flags["claims-tls-key"] == "" {
			t.Errorf("%s: the claim check hands out identifiers and must be served over TLS", where)
		}
	}
}

// connectFlags returns the container's arguments as flag values, with
// $(VAR) expanded from its environment, and fails on a flag lethe-connect
// does not define.
func connectFlags(t *testing.T, where string, c *corev1.Container, known map[string]bool) map[string]string {
	t.Helper()
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v overrides the image's entrypoint", where, c.Command)
	}
	env := containerEnv(c)
	flags := map[string]string{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			t.Errorf("%s: argument %q is not --flag=value", where, a)
			continue
		}
		if !known[name] {
			t.Errorf("%s: lethe-connect has no flag --%s", where, name)
		}
		flags[name] = regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllStringFunc(value, func(ref string) string {
			return env[ref[2:len(ref)-1]]
		})
	}
	return flags
}

// connectFlagNames are the flags lethe-connect defines: those its main
// registers on its flag set, read from its source, and the NATS client's,
// which it registers through sdk/connection.
func connectFlagNames(t *testing.T) map[string]bool {
	t.Helper()
	main, err := os.ReadFile(filepath.Join(deploy.Dir(), "..", "sdk", "connect", "cmd", "lethe-connect", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`fs\.\w+Var\([^,]+, "([a-z0-9-]+)",`).FindAllSubmatch(main, -1) {
		known[string(m[1])] = true
	}
	if !bytes.Contains(main, []byte("o.nats.RegisterFlags(fs)")) {
		t.Fatal("lethe-connect's main no longer registers sdk/connection's NATS flags: update connectFlagNames")
	}
	fs := flag.NewFlagSet("nats", flag.ContinueOnError)
	(&connection.NATS{}).RegisterFlags(fs)
	fs.VisitAll(func(f *flag.Flag) { known[f.Name] = true })
	return known
}

// checkConnectPod checks the pod's lock-down, as the services': a numeric
// non-root user, no token, a read-only root, no capabilities, and probes
// on a port the container declares.
func checkConnectPod(t *testing.T, where string, pod *corev1.PodSpec) {
	t.Helper()
	c := &pod.Containers[0]
	sc, psc := c.SecurityContext, pod.SecurityContext
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken || psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: the pod is not locked down as the services are", where)
	}
	healthPort := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--health-addr="); ok {
			_, healthPort, _ = strings.Cut(v, ":")
		}
	}
	for name, want := range map[string]struct {
		p    *corev1.Probe
		path string
	}{"startup": {c.StartupProbe, "/healthz"}, "liveness": {c.LivenessProbe, "/healthz"}, "readiness": {c.ReadinessProbe, "/readyz"}} {
		p := want.p
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want.path ||
			strconv.Itoa(int(containerPort(c, p.HTTPGet.Port))) != healthPort {
			t.Errorf("%s: the %s probe is not a GET %s on the port of --health-addr (%q)", where, name, want.path, healthPort)
		}
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("%s: no resource requests and limits", where)
	}
}

// containerPort is the number of a probe's port, named or numbered, in c;
// 0 when c declares no such port.
func containerPort(c *corev1.Container, target intstr.IntOrString) int32 {
	for _, p := range c.Ports {
		if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
			return p.ContainerPort
		}
	}
	return 0
}
