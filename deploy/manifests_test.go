package deploy_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
)

// services are Lethe's deployables and their gRPC ports (each service's
// DefaultAddr).
var services = map[string]int32{"consent": 7401, "dsar": 7402, "retention": 7403, "registry": 7404}

// factories are what each deployable's main hands service.Main: its flags,
// its neighbours and its production checks come from them.
var factories = map[string]service.Factory{
	"consent": consent.Factory, "dsar": dsar.Factory, "retention": retention.Factory, "registry": registry.Factory,
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// that Lethe uses. It is not in k8s.io/api; decoding strictly into it
// rejects a misspelt field as the real CRD schema would.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			MatchNames []string `json:"matchNames,omitempty"`
			Any        bool     `json:"any,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// rendered is one overlay's objects, decoded.
type rendered struct {
	name            string
	namespaces      []corev1.Namespace
	serviceAccounts []corev1.ServiceAccount
	services        []corev1.Service
	statefulSets    []appsv1.StatefulSet
	deployments     []appsv1.Deployment
	claims          []corev1.PersistentVolumeClaim
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	policies        []networkingv1.NetworkPolicy
	budgets         []policyv1.PodDisruptionBudget
	autoscalers     []autoscalingv2.HorizontalPodAutoscaler
	monitors        []serviceMonitor
	issuers         []issuer
	certificates    []certificate
}

// decodeStrict decodes data into v and fails on any field v does not
// know, as a strict API server (kubectl --validate=strict) would.
func decodeStrict(t *testing.T, o deploy.Object, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.JSON, v); err != nil {
		t.Errorf("%s %s does not decode strictly: %v", o.Kind, o.Name, err)
	}
}

func appendDecoded[T any](t *testing.T, o deploy.Object, list *[]T) {
	var v T
	decodeStrict(t, o, &v)
	*list = append(*list, v)
}

// render renders overlay and decodes every object strictly into its
// Kubernetes type; an object of a kind the tests do not know fails.
func render(t *testing.T, overlay string) *rendered {
	t.Helper()
	objects, err := deploy.Render(overlay)
	if err != nil {
		t.Fatal(err)
	}
	r := &rendered{name: overlay}
	for _, o := range objects {
		var meta struct {
			APIVersion string            `json:"apiVersion"`
			Kind       string            `json:"kind"`
			Metadata   metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal(o.JSON, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind != "Namespace" && meta.Metadata.Namespace != "lethe" {
			t.Errorf("%s: %s %s is in namespace %q, want lethe", overlay, o.Kind, o.Name, meta.Metadata.Namespace)
		}
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			appendDecoded(t, o, &r.namespaces)
		case "v1 ServiceAccount":
			appendDecoded(t, o, &r.serviceAccounts)
		case "v1 Service":
			appendDecoded(t, o, &r.services)
		case "v1 ConfigMap":
			appendDecoded(t, o, &r.configMaps)
		case "v1 Secret":
			appendDecoded(t, o, &r.secrets)
		case "apps/v1 StatefulSet":
			appendDecoded(t, o, &r.statefulSets)
		case "apps/v1 Deployment":
			appendDecoded(t, o, &r.deployments)
		case "v1 PersistentVolumeClaim":
			appendDecoded(t, o, &r.claims)
		case "networking.k8s.io/v1 NetworkPolicy":
			appendDecoded(t, o, &r.policies)
		case "policy/v1 PodDisruptionBudget":
			appendDecoded(t, o, &r.budgets)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			appendDecoded(t, o, &r.autoscalers)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			appendDecoded(t, o, &r.monitors)
		case "cert-manager.io/v1 Issuer":
			appendDecoded(t, o, &r.issuers)
		case "cert-manager.io/v1 Certificate":
			appendDecoded(t, o, &r.certificates)
		default:
			t.Errorf("%s: %s %s: no strict type for %s %s; add one to the test", overlay, o.Kind, o.Name, meta.APIVersion, meta.Kind)
		}
	}
	return r
}

func renderAll(t *testing.T) []*rendered {
	t.Helper()
	var all []*rendered
	for _, o := range deploy.Overlays {
		all = append(all, render(t, o))
	}
	return all
}

// TestStrictDecodeCatchesUnknownFields shows that the strict decoding the
// other tests rely on rejects what the API server would drop.
func TestStrictDecodeCatchesUnknownFields(t *testing.T) {
	bad := []byte(`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"x"},"spec":{"replica":1}}`)
	var sts appsv1.StatefulSet
	if err := yaml.UnmarshalStrict(bad, &sts); err == nil {
		t.Fatal(`"replica" (for "replicas") decoded without an error`)
	}
	var sm serviceMonitor
	if err := yaml.UnmarshalStrict([]byte(`{"kind":"ServiceMonitor","metadata":{"name":"x"},"spec":{"endpoint":[]}}`), &sm); err == nil {
		t.Fatal(`ServiceMonitor "endpoint" (for "endpoints") decoded without an error`)
	}
	var cert certificate
	if err := yaml.UnmarshalStrict([]byte(`{"kind":"Certificate","metadata":{"name":"x"},"spec":{"dnsName":["x"]}}`), &cert); err == nil {
		t.Fatal(`Certificate "dnsName" (for "dnsNames") decoded without an error`)
	}
	var iss issuer
	if err := yaml.UnmarshalStrict([]byte(`{"kind":"Issuer","metadata":{"name":"x"},"spec":{"ca":{"secret":"x"}}}`), &iss); err == nil {
		t.Fatal(`Issuer "ca.secret" (for "ca.secretName") decoded without an error`)
	}
}

func (r *rendered) statefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	for i := range r.statefulSets {
		if r.statefulSets[i].Name == name {
			return &r.statefulSets[i]
		}
	}
	t.Fatalf("%s: no StatefulSet %s", r.name, name)
	return nil
}

func (r *rendered) configMap(t *testing.T, prefix string) *corev1.ConfigMap {
	t.Helper()
	for i := range r.configMaps {
		if r.configMaps[i].Name == prefix || strings.HasPrefix(r.configMaps[i].Name, prefix+"-") {
			return &r.configMaps[i]
		}
	}
	t.Fatalf("%s: no ConfigMap %s", r.name, prefix)
	return nil
}

// TestStatefulSets checks what Lethe relies on in every workload: one
// writer per bbolt file, a three-node NATS, probes, limits, a locked-down
// container and a volume per pod.
func TestStatefulSets(t *testing.T) {
	for _, r := range renderAll(t) {
		want := map[string]int32{"nats": 3}
		for svc := range services {
			want["lethe-"+svc] = 1
		}
		if len(r.statefulSets) != len(want) {
			t.Errorf("%s: %d StatefulSets, want %d", r.name, len(r.statefulSets), len(want))
		}
		for _, sts := range r.statefulSets {
			where := r.name + ": StatefulSet " + sts.Name
			replicas, ok := want[sts.Name]
			if !ok {
				t.Errorf("%s: unexpected", where)
				continue
			}
			if sts.Spec.Replicas == nil || *sts.Spec.Replicas != replicas {
				t.Errorf("%s: replicas %v, want %d", where, sts.Spec.Replicas, replicas)
			}
			if replicas == 1 {
				// One writer: a StatefulSet's RollingUpdate replaces a
				// pod only after the old one terminated; OnDelete waits
				// for an operator. A maxUnavailable or Parallel policy
				// could start a pod early.
				switch u := sts.Spec.UpdateStrategy; u.Type {
				case appsv1.OnDeleteStatefulSetStrategyType:
				case appsv1.RollingUpdateStatefulSetStrategyType:
					if u.RollingUpdate != nil && u.RollingUpdate.MaxUnavailable != nil {
						t.Errorf("%s: maxUnavailable set on a single writer", where)
					}
				default:
					t.Errorf("%s: update strategy %q", where, u.Type)
				}
				if sts.Spec.PodManagementPolicy != appsv1.OrderedReadyPodManagement {
					t.Errorf("%s: pod management %q, want OrderedReady", where, sts.Spec.PodManagementPolicy)
				}
			}
			checkVolumes(t, where, &sts)
			checkPodSecurity(t, where, &sts.Spec.Template.Spec)
			for _, c := range sts.Spec.Template.Spec.Containers {
				checkContainer(t, where+" container "+c.Name, &c)
			}
			if !slices.ContainsFunc(r.services, func(s corev1.Service) bool {
				return s.Name == sts.Spec.ServiceName && s.Spec.ClusterIP == corev1.ClusterIPNone
			}) {
				t.Errorf("%s: serviceName %q is not a headless Service", where, sts.Spec.ServiceName)
			}
		}
		for svc, port := range services {
			checkServiceContainer(t, r, svc, port)
		}
		nats := r.statefulSet(t, "nats")
		if nats.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			t.Errorf("%s: NATS pods start in order; a JetStream quorum needs them together", r.name)
		}
		natsBudgets := slices.DeleteFunc(slices.Clone(r.budgets), func(b policyv1.PodDisruptionBudget) bool {
			return !selects(b.Spec.Selector, nats.Spec.Template.Labels)
		})
		if len(natsBudgets) != 1 || natsBudgets[0].Spec.MaxUnavailable == nil || natsBudgets[0].Spec.MaxUnavailable.IntValue() != 1 {
			t.Errorf("%s: want one PodDisruptionBudget of NATS with maxUnavailable 1, got %+v", r.name, natsBudgets)
		}
	}
}

func checkVolumes(t *testing.T, where string, sts *appsv1.StatefulSet) {
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("%s: no volumeClaimTemplates", where)
	}
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		if _, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
			t.Errorf("%s: claim %s requests no storage", where, pvc.Name)
		}
		if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
			t.Errorf("%s: claim %s access modes %v, want ReadWriteOnce", where, pvc.Name, pvc.Spec.AccessModes)
		}
	}
	declared := map[string]bool{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		declared[v.Name] = true
	}
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		declared[pvc.Name] = true
	}
	mounted := map[string]string{}
	for _, c := range sts.Spec.Template.Spec.Containers {
		for _, m := range c.VolumeMounts {
			if !declared[m.Name] {
				t.Errorf("%s: mount %s has no volume", where, m.Name)
			}
			if m.SubPath != "" {
				t.Errorf("%s: mount %s uses subPath, which never sees a renewed Secret or ConfigMap", where, m.Name)
			}
			mounted[m.Name] = m.MountPath
		}
	}
	if mounted["data"] != "/data" {
		t.Errorf("%s: the data claim is mounted at %q, want /data", where, mounted["data"])
	}
}

func checkPodSecurity(t *testing.T, where string, pod *corev1.PodSpec) {
	sc := pod.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no pod securityContext", where)
		return
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("%s: runAsNonRoot not set", where)
	case sc.RunAsUser == nil || *sc.RunAsUser == 0:
		t.Errorf("%s: runAsUser must be a numeric non-root user", where)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: seccomp profile is not RuntimeDefault", where)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: mounts a service account token it has no use for", where)
	}
}

func checkContainer(t *testing.T, where string, c *corev1.Container) {
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("%s: liveness and readiness probes are required", where)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[res]
		limit, hasLimit := c.Resources.Limits[res]
		if !hasReq || !hasLimit {
			t.Errorf("%s: %s needs a request and a limit", where, res)
		} else if req.Cmp(limit) > 0 {
			t.Errorf("%s: %s request %s exceeds its limit %s", where, res, req.String(), limit.String())
		}
	}
	checkContainerSecurity(t, where, c)
	// $(VAR) in an env value is expanded only from variables defined
	// before it; a later or missing one stays literal.
	defined := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: %s refers to $(%s) before it is defined", where, e.Name, m[1])
			}
		}
		defined[e.Name] = true
	}
}

// checkContainerSecurity checks what the restricted Pod Security Standard
// and Lethe's own rules ask of a container: a read-only root filesystem,
// no privilege escalation, no capabilities, not privileged.
func checkContainerSecurity(t *testing.T, where string, c *corev1.Container) {
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: root filesystem is writable", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: privilege escalation allowed", where)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop ALL and add none", where, sc.Capabilities)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
}

// flagNames are the flags service svc's deployable takes, as its --help
// lists them.
func flagNames(svc string) map[string]bool {
	names := map[string]bool{}
	service.FlagSet(factories[svc]).VisitAll(func(f *flag.Flag) { names[f.Name] = true })
	return names
}

// checkServiceContainer checks a Lethe service's container: its
// LETHE_* variables are real flags, it listens where its Service and
// probes point, and its probes are gRPC health checks.
func checkServiceContainer(t *testing.T, r *rendered, svc string, port int32) {
	sts := r.statefulSet(t, "lethe-"+svc)
	where := r.name + ": lethe-" + svc
	pod := &sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
	}
	c := pod.Containers[0]
	if !strings.Contains(c.Image, "lethe-"+svc) {
		t.Errorf("%s: image %q", where, c.Image)
	}
	flags := flagNames(svc)
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if name, ok := strings.CutPrefix(e.Name, service.EnvPrefix+"_"); ok {
			flagName := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
			if !flags[flagName] {
				t.Errorf("%s: %s sets no flag (there is no --%s)", where, e.Name, flagName)
			}
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && strings.HasPrefix(e.Name, service.EnvPrefix+"_") {
			t.Errorf("%s: a secret in %s would be a flag value; build it into the URL through another variable", where, e.Name)
		}
	}
	if env["LETHE_ADDR"] != fmt.Sprintf(":%d", port) {
		t.Errorf("%s: LETHE_ADDR %q, want :%d", where, env["LETHE_ADDR"], port)
	}
	if env["LETHE_DATA"] != "/data" {
		t.Errorf("%s: LETHE_DATA %q, want /data", where, env["LETHE_DATA"])
	}
	checkBackups(t, where, sts, &c, env)
	// The NATS user is the service's; its password is a file of the
	// Secret, never part of the URL (production refuses credentials in
	// --nats-url: they would be a flag value).
	if env["LETHE_NATS_URL"] != "$(NATS_SCHEME)://nats:4222" {
		t.Errorf("%s: LETHE_NATS_URL %q, want $(NATS_SCHEME)://nats:4222 without credentials", where, env["LETHE_NATS_URL"])
	}
	if env["LETHE_NATS_USER"] != svc {
		t.Errorf("%s: LETHE_NATS_USER %q, want the service's NATS user %s", where, env["LETHE_NATS_USER"], svc)
	}
	if key := secretFileKey(pod, &c, env["LETHE_NATS_PASSWORD_FILE"], "lethe-nats-users"); key != "NATS_PASSWORD_"+strings.ToUpper(svc) {
		t.Errorf("%s: LETHE_NATS_PASSWORD_FILE %q is key %q of Secret lethe-nats-users, want NATS_PASSWORD_%s",
			where, env["LETHE_NATS_PASSWORD_FILE"], key, strings.ToUpper(svc))
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != port {
		t.Errorf("%s: grpc port %d, want %d", where, ports["grpc"], port)
	}
	if env["LETHE_HEALTH_ADDR"] != fmt.Sprintf(":%d", ports["health"]) || ports["health"] == 0 {
		t.Errorf("%s: probes go to port %d, LETHE_HEALTH_ADDR is %q", where, ports["health"], env["LETHE_HEALTH_ADDR"])
	}
	if env["LETHE_METRICS_ADDR"] != fmt.Sprintf(":%d", ports["metrics"]) || ports["metrics"] == 0 {
		t.Errorf("%s: metrics port %d, LETHE_METRICS_ADDR is %q", where, ports["metrics"], env["LETHE_METRICS_ADDR"])
	}
	if env["LETHE_HTTP_ADDR"] != fmt.Sprintf(":%d", ports["http"]) || ports["http"] == 0 {
		t.Errorf("%s: HTTP/JSON port %d, LETHE_HTTP_ADDR is %q", where, ports["http"], env["LETHE_HTTP_ADDR"])
	}
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.GRPC == nil || p.GRPC.Port != ports["health"] {
			t.Errorf("%s: %s probe is not a gRPC health check on the health port", where, name)
		}
	}
	if p := c.ReadinessProbe; p != nil && p.GRPC != nil {
		if want := fmt.Sprintf("lethe.%s.v1.", svc); p.GRPC.Service == nil || !strings.HasPrefix(*p.GRPC.Service, want) {
			t.Errorf("%s: readiness asks about %v, want the service's own health name %s…", where, p.GRPC.Service, want)
		}
	}
}

// backupPeriodAlerted is the longest backup period the stale-backup alert
// in docs/operations.md is written for: it fires after two periods
// without a good backup, 2 * 3600 seconds.
const backupPeriodAlerted = time.Hour

// checkBackups checks that a service takes its hot backups
// (--backup-dir, --backup-every) onto a claim of its own: not the data
// claim, which a lost or corrupted volume takes with it, and with room for
// the last backup and the one being written beside it (each is a whole
// copy of the files on the data claim). The period must be one the
// stale-backup alert is written for.
func checkBackups(t *testing.T, where string, sts *appsv1.StatefulSet, c *corev1.Container, env map[string]string) {
	t.Helper()
	dir := env["LETHE_BACKUP_DIR"]
	if dir == "" {
		t.Errorf("%s: LETHE_BACKUP_DIR is not set: the service takes no backups", where)
		return
	}
	every, err := time.ParseDuration(env["LETHE_BACKUP_EVERY"])
	if err != nil || every <= 0 || every > backupPeriodAlerted {
		t.Errorf("%s: LETHE_BACKUP_EVERY %q, want a period of at most %v (the stale-backup alert assumes it)",
			where, env["LETHE_BACKUP_EVERY"], backupPeriodAlerted)
	}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for i := range sts.Spec.VolumeClaimTemplates {
		claims[sts.Spec.VolumeClaimTemplates[i].Name] = &sts.Spec.VolumeClaimTemplates[i]
	}
	var mounted string
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			mounted = m.Name
		}
	}
	backup, data := claims[mounted], claims["data"]
	switch {
	case backup == nil:
		t.Errorf("%s: LETHE_BACKUP_DIR %s is not the mount of a volumeClaimTemplate", where, dir)
	case mounted == "data" || strings.HasPrefix(dir, "/data/"):
		t.Errorf("%s: LETHE_BACKUP_DIR %s is on the data claim", where, dir)
	case data != nil:
		need := data.Spec.Resources.Requests[corev1.ResourceStorage].DeepCopy()
		need.Add(need)
		if have := backup.Spec.Resources.Requests[corev1.ResourceStorage]; have.Cmp(need) < 0 {
			t.Errorf("%s: backup claim %s requests %s, want at least twice the data claim (%s)", where, mounted, have.String(), need.String())
		}
	}
}

// selects reports whether sel matches a pod with podLabels.
func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

func (r *rendered) pods() map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for i := range r.statefulSets {
		pods[r.statefulSets[i].Name] = &r.statefulSets[i].Spec.Template
	}
	for i := range r.deployments {
		pods[r.deployments[i].Name] = &r.deployments[i].Spec.Template
	}
	return pods
}

// TestServicesSelectPods checks that every Service reaches a pod and every
// port it names exists there, and that the ServiceMonitor scrapes a port
// the services have.
func TestServicesSelectPods(t *testing.T) {
	for _, r := range renderAll(t) {
		for _, s := range r.services {
			where := r.name + ": Service " + s.Name
			if len(s.Spec.Selector) == 0 {
				t.Errorf("%s: no selector", where)
				continue
			}
			matched := 0
			for name, pod := range r.pods() {
				if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
					continue
				}
				matched++
				for _, p := range s.Spec.Ports {
					if !hasPort(pod, p.TargetPort) {
						t.Errorf("%s: port %s targets %s, which pods of %s do not declare", where, p.Name, p.TargetPort.String(), name)
					}
				}
			}
			if matched == 0 {
				t.Errorf("%s: selector %v matches no pod template", where, s.Spec.Selector)
			}
		}
		if len(r.monitors) != 1 {
			t.Fatalf("%s: %d ServiceMonitors, want 1", r.name, len(r.monitors))
		}
		sm := r.monitors[0]
		scraped := 0
		for _, s := range r.services {
			if selects(&sm.Spec.Selector, s.Labels) {
				scraped++
				if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == sm.Spec.Endpoints[0].Port }) {
					t.Errorf("%s: ServiceMonitor scrapes port %q, which Service %s lacks", r.name, sm.Spec.Endpoints[0].Port, s.Name)
				}
			}
		}
		// The Lethe services, and the consent read replicas.
		if scraped != len(services)+1 {
			t.Errorf("%s: ServiceMonitor selects %d Services, want the %d Lethe services and the consent replicas", r.name, scraped, len(services)+1)
		}
	}
}

func hasPort(pod *corev1.PodTemplateSpec, target intstr.IntOrString) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return true
			}
		}
	}
	return false
}

// TestNetworkPolicies evaluates the rendered NetworkPolicies for pairs of
// Lethe's own pods: what must be reachable is, and what no caller needs is
// not.
func TestNetworkPolicies(t *testing.T) {
	type flow struct {
		from, to string
		port     int32
		allowed  bool
	}
	flows := []flow{
		{"lethe-dsar", "lethe-registry", 7404, true},
		{"lethe-consent", "lethe-registry", 7404, true},
		{"lethe-retention", "lethe-registry", 7404, true},
		{"lethe-dsar", "lethe-consent", 7401, true},
		{"lethe-dsar", "lethe-retention", 7403, true},
		{"lethe-registry", "lethe-consent", 7401, false},
		{"lethe-consent", "lethe-dsar", 7402, false},
		{"lethe-retention", "lethe-consent", 7401, false},
		{"lethe-registry", "lethe-dsar", 7402, false},
		{"lethe-consent", "lethe-registry", 9464, false},
		{"nats", "lethe-registry", 7404, false},
		{"nats", "nats", 6222, true},
		{"lethe-consent", "nats", 6222, false},
		{"lethe-consent", "nats", 8222, false},
		{"lethe-connect", "lethe-registry", 7404, true},
		{"lethe-connect", "lethe-dsar", 7402, true},
		{"lethe-connect", "nats", 4222, true},
		{"lethe-connect", "lethe-consent", 7401, false},
		{"lethe-connect", "lethe-retention", 7403, false},
		{"lethe-connect", "lethe-registry", 9464, false},
		{"lethe-dsar", "lethe-connect", 8443, false},         // receivers call it, through the ingress
		{"lethe-dsar", "lethe-consent-replica", 7401, false}, // DSAR writes: it calls the writer
		{"lethe-consent-replica", "nats", 4222, true},
		{"lethe-consent-replica", "lethe-registry", 7404, false},
		{"lethe-consent-replica", "lethe-consent", 7401, false},
		{"lethe-registry", "lethe-consent-replica", 7401, false},
	}
	for svc := range services {
		flows = append(flows, flow{"lethe-" + svc, "nats", 4222, true})
	}
	for _, r := range renderAll(t) {
		pods := r.pods()
		if !slices.ContainsFunc(r.policies, func(p networkingv1.NetworkPolicy) bool {
			return len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
				len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0 && len(p.Spec.PolicyTypes) == 2
		}) {
			t.Errorf("%s: no default-deny policy for ingress and egress", r.name)
		}
		for name, pod := range pods {
			if !slices.ContainsFunc(r.policies, func(p networkingv1.NetworkPolicy) bool {
				return selects(&p.Spec.PodSelector, pod.Labels) && len(p.Spec.Ingress) > 0
			}) {
				t.Errorf("%s: no NetworkPolicy admits anything to %s", r.name, name)
			}
		}
		for _, p := range r.policies {
			if len(p.Spec.PodSelector.MatchLabels) == 0 {
				continue
			}
			if !slices.ContainsFunc(mapsValues(pods), func(pod *corev1.PodTemplateSpec) bool { return selects(&p.Spec.PodSelector, pod.Labels) }) {
				t.Errorf("%s: NetworkPolicy %s selects no pod", r.name, p.Name)
			}
		}
		// Callers from outside Lethe, as the receiving pod's ingress sees
		// them: each service's HTTP/JSON port admits its gRPC port's
		// callers, and consent's public port anyone (the ingress).
		stranger := map[string]string{"app.kubernetes.io/name": "ingress-nginx"}
		for svc, grpcPort := range map[string]int32{"consent": 7401, "dsar": 7402, "retention": 7403, "registry": 7404} {
			to := pods["lethe-"+svc]
			client := map[string]string{"lethe.dev/client-" + svc: "true"}
			for _, port := range []int32{grpcPort, 8080} {
				if !allowed(r.policies, networkingv1.PolicyTypeIngress, to.Labels, client, port) {
					t.Errorf("%s: a labelled client may not reach %s:%d", r.name, svc, port)
				}
				if allowed(r.policies, networkingv1.PolicyTypeIngress, to.Labels, stranger, port) {
					t.Errorf("%s: anyone may reach %s:%d", r.name, svc, port)
				}
			}
			if got := allowed(r.policies, networkingv1.PolicyTypeIngress, to.Labels, stranger, 8081); got != (svc == "consent") {
				t.Errorf("%s: anyone may reach %s:8081 = %v", r.name, svc, got)
			}
		}
		for _, f := range flows {
			from, to := pods[f.from], pods[f.to]
			if from == nil || to == nil {
				t.Fatalf("%s: no pods %s or %s", r.name, f.from, f.to)
			}
			got := allowed(r.policies, networkingv1.PolicyTypeEgress, from.Labels, to.Labels, f.port) &&
				allowed(r.policies, networkingv1.PolicyTypeIngress, to.Labels, from.Labels, f.port)
			if got != f.allowed {
				t.Errorf("%s: %s → %s:%d allowed = %v, want %v", r.name, f.from, f.to, f.port, got, f.allowed)
			}
		}
	}
}

func mapsValues[K comparable, V any](m map[K]V) []V {
	var vs []V
	for _, v := range m {
		vs = append(vs, v)
	}
	return vs
}

// allowed evaluates policies of type typ that select pod (the receiver for
// ingress, the sender for egress) for traffic with peer, a pod in the same
// namespace, on TCP port. Unselected pods are open, as in Kubernetes.
func allowed(policies []networkingv1.NetworkPolicy, typ networkingv1.PolicyType, pod, peer map[string]string, port int32) bool {
	selected := false
	for _, p := range policies {
		if !slices.Contains(p.Spec.PolicyTypes, typ) || !selectsOrAll(&p.Spec.PodSelector, pod) {
			continue
		}
		selected = true
		type rule struct {
			peers []networkingv1.NetworkPolicyPeer
			ports []networkingv1.NetworkPolicyPort
		}
		var rules []rule
		for _, in := range p.Spec.Ingress {
			if typ == networkingv1.PolicyTypeIngress {
				rules = append(rules, rule{in.From, in.Ports})
			}
		}
		for _, out := range p.Spec.Egress {
			if typ == networkingv1.PolicyTypeEgress {
				rules = append(rules, rule{out.To, out.Ports})
			}
		}
		for _, r := range rules {
			if peerMatches(r.peers, peer) && portMatches(r.ports, port) {
				return true
			}
		}
	}
	return !selected
}

func selectsOrAll(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(podLabels))
}

// peerMatches reports whether a pod of Lethe's namespace (which carries no
// namespace labels the policies select on) is among peers.
func peerMatches(peers []networkingv1.NetworkPolicyPeer, pod map[string]string) bool {
	if len(peers) == 0 {
		return true
	}
	for _, p := range peers {
		if p.IPBlock != nil {
			continue
		}
		if p.NamespaceSelector != nil && (len(p.NamespaceSelector.MatchLabels) > 0 || len(p.NamespaceSelector.MatchExpressions) > 0) {
			continue // another namespace (kube-system, monitoring)
		}
		if p.PodSelector == nil || selectsOrAll(p.PodSelector, pod) {
			return true
		}
	}
	return false
}

func portMatches(ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		if p.Port == nil || (p.Port.Type == intstr.Int && p.Port.IntVal == port) {
			return true
		}
	}
	return false
}

// natsPasswordVariables returns the NATS_PASSWORD_* variables the shipped
// NATS configuration refers to.
func natsPasswordVariables(t *testing.T) []string {
	data, err := os.ReadFile(filepath.Join(deploy.Dir(), "nats", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`(?m)^\s*password:\s*\$(NATS_PASSWORD_[A-Z0-9_]+)\s*$`).FindAllStringSubmatch(string(data), -1)
	var names []string
	for _, v := range vars {
		names = append(names, v[1])
	}
	if len(names) == 0 {
		t.Fatal("auth.conf refers to no NATS_PASSWORD_ variables")
	}
	return names
}

// TestNATSConfigIsTheShippedOne checks that the NATS pods run the files in
// deploy/nats (which the natsauth tests run a real server from), that the
// Secret the pods read holds every password the files refer to, and that
// the image is the nats-server version those tests embed.
func TestNATSConfigIsTheShippedOne(t *testing.T) {
	for _, r := range renderAll(t) {
		cm := r.configMap(t, "nats-config")
		for _, file := range []string{"nats.conf", "auth.conf"} {
			want, err := os.ReadFile(filepath.Join(deploy.Dir(), "nats", file))
			if err != nil {
				t.Fatal(err)
			}
			if cm.Data[file] != string(want) {
				t.Errorf("%s: ConfigMap %s key %s differs from deploy/nats/%s", r.name, cm.Name, file, file)
			}
		}
		nats := r.statefulSet(t, "nats")
		if v := nats.Spec.Template.Spec.Volumes; !slices.ContainsFunc(v, func(v corev1.Volume) bool {
			return v.ConfigMap != nil && v.ConfigMap.Name == cm.Name
		}) {
			t.Errorf("%s: NATS pods do not mount ConfigMap %s", r.name, cm.Name)
		}
		c := nats.Spec.Template.Spec.Containers[0]
		if !slices.ContainsFunc(c.EnvFrom, func(e corev1.EnvFromSource) bool {
			return e.SecretRef != nil && e.SecretRef.Name == "lethe-nats-users"
		}) {
			t.Errorf("%s: NATS pods do not read their passwords from Secret lethe-nats-users", r.name)
		}
		version := natsServerModuleVersion(t)
		if want := "nats:" + strings.TrimPrefix(version, "v") + "-alpine"; c.Image != want {
			t.Errorf("%s: NATS image %q, want %q: the version whose server the permission tests ran", r.name, c.Image, want)
		}
		for _, s := range r.secrets {
			if s.Name != "lethe-nats-users" {
				continue
			}
			for _, v := range natsPasswordVariables(t) {
				if _, ok := s.StringData[v]; !ok && s.Data[v] == nil {
					t.Errorf("%s: Secret lethe-nats-users lacks %s, which auth.conf needs", r.name, v)
				}
			}
		}
		for svc := range services {
			pod := r.statefulSet(t, "lethe-"+svc).Spec.Template.Spec
			for _, v := range pod.Volumes {
				if v.Secret == nil || v.Secret.SecretName != "lethe-nats-users" {
					continue
				}
				for _, item := range v.Secret.Items {
					if !slices.Contains(natsPasswordVariables(t), item.Key) {
						t.Errorf("%s: lethe-%s reads password %s, which no NATS user has", r.name, svc, item.Key)
					}
				}
			}
		}
	}
}

// natsServerModuleVersion is the nats-server version deploy/go.mod
// requires: the server the natsauth tests run the shipped configuration on.
func natsServerModuleVersion(t *testing.T) string {
	data, err := os.ReadFile(filepath.Join(deploy.Dir(), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 (v\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("deploy/go.mod does not require nats-server")
	}
	return string(m[1])
}

// TestOverlayDifferences checks what the overlays promise: production
// turns on the production profile, mutual TLS for the services and NATS,
// SPIFFE identities and a policy file that loads, and renders no
// Secret; development renders its NATS passwords and stays in the
// development profile.
func TestOverlayDifferences(t *testing.T) {
	prod := render(t, "overlays/production")
	for svc := range services {
		sts := prod.statefulSet(t, "lethe-"+svc)
		pod := &sts.Spec.Template.Spec
		c := pod.Containers[0]
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		where := "production: lethe-" + svc
		if env["LETHE_PROFILE"] != server.ProfileProduction {
			t.Errorf("%s: LETHE_PROFILE %q", where, env["LETHE_PROFILE"])
		}
		if env["NATS_SCHEME"] != "tls" {
			t.Errorf("%s: NATS without TLS (NATS_SCHEME %q)", where, env["NATS_SCHEME"])
		}
		td := env["LETHE_TRUST_DOMAIN"]
		if auth.ValidTrustDomain(td) != nil {
			t.Errorf("%s: trust domain %q", where, td)
		}
		for _, v := range []string{"LETHE_TLS_CERT", "LETHE_TLS_KEY", "LETHE_TLS_CLIENT_CA"} {
			if vol := mountedFrom(pod, &c, env[v]); vol == nil || vol.Secret == nil || vol.Secret.SecretName != "lethe-"+svc+"-tls" {
				t.Errorf("%s: %s=%q is not a file of Secret lethe-%s-tls", where, v, env[v], svc)
			}
		}
		vol := mountedFrom(pod, &c, env["LETHE_AUTHZ_POLICY"])
		if vol == nil || vol.ConfigMap == nil {
			t.Fatalf("%s: LETHE_AUTHZ_POLICY=%q is not a file of a ConfigMap", where, env["LETHE_AUTHZ_POLICY"])
		}
		cm := prod.configMap(t, vol.ConfigMap.Name)
		file := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(file, []byte(cm.Data[filepath.Base(env["LETHE_AUTHZ_POLICY"])]), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := auth.LoadPolicy(file, nil); err != nil {
			t.Errorf("%s: the policy does not load: %v", where, err)
		}
		if want := "spiffe://" + td + "/"; !strings.Contains(cm.Data["policy.json"], want) {
			t.Errorf("%s: the policy names no identity of trust domain %s", where, td)
		}
	}
	if len(prod.secrets) != 0 {
		t.Errorf("production renders %d Secrets; its secrets are created outside the overlay", len(prod.secrets))
	}
	natsConf := prod.configMap(t, "nats-config")
	for _, key := range []string{"client-tls.conf", "cluster-tls.conf"} {
		if !regexp.MustCompile(`(?m)^\s*verify:\s*true\s*$`).MatchString(natsConf.Data[key]) {
			t.Errorf("production: NATS %s does not require client certificates", key)
		}
	}
	nats := prod.statefulSet(t, "nats")
	if mountedFrom(&nats.Spec.Template.Spec, &nats.Spec.Template.Spec.Containers[0], "/etc/nats/tls/tls.crt") == nil {
		t.Error("production: NATS pods do not mount their certificate at /etc/nats/tls")
	}

	dev := render(t, "overlays/dev")
	for svc := range services {
		for _, e := range dev.statefulSet(t, "lethe-"+svc).Spec.Template.Spec.Containers[0].Env {
			if e.Name == "LETHE_PROFILE" && e.Value == server.ProfileProduction {
				t.Errorf("dev: lethe-%s runs the production profile", svc)
			}
		}
	}
	if !slices.ContainsFunc(dev.secrets, func(s corev1.Secret) bool { return s.Name == "lethe-nats-users" }) {
		t.Error("dev: no Secret lethe-nats-users")
	}
	if c := dev.configMap(t, "nats-config"); strings.Contains(c.Data["client-tls.conf"], "tls {") {
		t.Error("dev: NATS requires TLS")
	}
}

// secretFileKey returns the key of Secret secret whose file path is in
// container c, or "" when path is no such file. A Secret volume with items
// has only the items' paths; without items, every key is a file.
func secretFileKey(pod *corev1.PodSpec, c *corev1.Container, path, secret string) string {
	vol := mountedFrom(pod, c, path)
	if vol == nil || vol.Secret == nil || vol.Secret.SecretName != secret {
		return ""
	}
	for _, m := range c.VolumeMounts {
		if m.Name != vol.Name {
			continue
		}
		rel := strings.TrimPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if len(vol.Secret.Items) == 0 {
			return rel
		}
		for _, item := range vol.Secret.Items {
			if item.Path == rel {
				return item.Key
			}
		}
	}
	return ""
}

// mountedFrom returns the volume that provides path in container c.
func mountedFrom(pod *corev1.PodSpec, c *corev1.Container, path string) *corev1.Volume {
	if path == "" {
		return nil
	}
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == m.Name {
					return &pod.Volumes[i]
				}
			}
		}
	}
	return nil
}

// TestConsentReplicas checks the consent read replicas: a Deployment of
// the consent image in the replica role, whose LETHE_* variables are the
// consent deployable's flags, on its own NATS user; scaled by CPU between
// at least two pods, one kept through voluntary disruptions; and one
// Service for Check, lethe-consent-read, that reaches the writer and the
// replicas alike.
func TestConsentReplicas(t *testing.T) {
	for _, r := range renderAll(t) {
		where := r.name + ": lethe-consent-replica"
		i := slices.IndexFunc(r.deployments, func(d appsv1.Deployment) bool { return d.Name == "lethe-consent-replica" })
		if i < 0 {
			t.Fatalf("%s: no Deployment", where)
		}
		d := r.deployments[i]
		pod := &d.Spec.Template.Spec
		c := pod.Containers[0]
		checkPodSecurity(t, where, pod)
		checkContainer(t, where, &c)
		if !strings.Contains(c.Image, "lethe-consent") {
			t.Errorf("%s: image %q, want the consent image", where, c.Image)
		}
		flags := flagNames("consent")
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
			if name, ok := strings.CutPrefix(e.Name, service.EnvPrefix+"_"); ok && !flags[strings.ToLower(strings.ReplaceAll(name, "_", "-"))] {
				t.Errorf("%s: %s sets no flag of lethe-consent", where, e.Name)
			}
		}
		if env["LETHE_ROLE"] != consent.RoleReplica || env["LETHE_NATS_USER"] != "consent-replica" {
			t.Errorf("%s: role %q, NATS user %q", where, env["LETHE_ROLE"], env["LETHE_NATS_USER"])
		}
		if key := secretFileKey(pod, &c, env["LETHE_NATS_PASSWORD_FILE"], "lethe-nats-users"); key != "NATS_PASSWORD_CONSENT_REPLICA" {
			t.Errorf("%s: NATS password from key %q", where, key)
		}
		if p := c.ReadinessProbe; p == nil || p.GRPC == nil || p.GRPC.Service == nil || *p.GRPC.Service != consent.ServiceName {
			t.Errorf("%s: readiness does not ask about %s", where, consent.ServiceName)
		}
		if r.name == "overlays/production" && env["LETHE_PROFILE"] != server.ProfileProduction {
			t.Errorf("%s: LETHE_PROFILE %q", where, env["LETHE_PROFILE"])
		}
		if len(r.autoscalers) != 1 {
			t.Fatalf("%s: %d HorizontalPodAutoscalers, want 1", r.name, len(r.autoscalers))
		}
		hpa := r.autoscalers[0].Spec
		if hpa.ScaleTargetRef.Kind != "Deployment" || hpa.ScaleTargetRef.Name != d.Name || hpa.MinReplicas == nil || *hpa.MinReplicas < 2 ||
			len(hpa.Metrics) != 1 || hpa.Metrics[0].Resource == nil || hpa.Metrics[0].Resource.Name != corev1.ResourceCPU {
			t.Errorf("%s: autoscaler %+v, want the Deployment by CPU, at least 2", where, hpa)
		}
		if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
			t.Errorf("%s: no CPU request, which the autoscaler's utilisation counts", where)
		}
		if !slices.ContainsFunc(r.budgets, func(b policyv1.PodDisruptionBudget) bool {
			return selects(b.Spec.Selector, d.Spec.Template.Labels) && b.Spec.MinAvailable != nil && b.Spec.MinAvailable.IntValue() >= 1
		}) {
			t.Errorf("%s: no PodDisruptionBudget keeps a replica", where)
		}
		j := slices.IndexFunc(r.services, func(s corev1.Service) bool { return s.Name == "lethe-consent-read" })
		if j < 0 {
			t.Fatalf("%s: no Service lethe-consent-read", r.name)
		}
		sel := labels.SelectorFromSet(r.services[j].Spec.Selector)
		for _, name := range []string{"lethe-consent", "lethe-consent-replica"} {
			if !sel.Matches(labels.Set(r.pods()[name].Labels)) {
				t.Errorf("%s: lethe-consent-read does not reach %s", r.name, name)
			}
		}
	}
}
