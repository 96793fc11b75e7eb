package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/lethe-privacy/lethe/deploy"
)

// TestRestorePodInREADME checks the restore procedure deploy/README.md
// gives against the rendered manifests, so that the documented commands
// keep working when the manifests change: its helper pod decodes strictly,
// meets the restricted Pod Security Standard the namespace enforces, runs
// as the service's user (so the file it writes is the service's), and
// mounts the service's own claims (<template>-<StatefulSet>-0) at the
// service's own paths; and the copy command moves the backup folder's
// file onto the data folder's, under the name the service opens.
func TestRestorePodInREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(deploy.Dir(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	found := false
	for _, b := range blocks {
		if strings.Contains(string(b[1]), "\nkind: Pod\n") {
			if err := yaml.UnmarshalStrict(b[1], &pod); err != nil {
				t.Fatalf("the restore pod in deploy/README.md does not decode strictly: %v", err)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("deploy/README.md shows no restore pod")
	}
	where := "deploy/README.md: pod " + pod.Name
	checkPodSecurity(t, where, &pod.Spec)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", where, len(pod.Spec.Containers))
	}
	c := &pod.Spec.Containers[0]
	checkContainerSecurity(t, where, c)

	prod := render(t, "overlays/production")
	sts := prod.statefulSet(t, "lethe-consent")
	svcPod := &sts.Spec.Template.Spec
	if pod.Namespace != sts.Namespace {
		t.Errorf("%s: namespace %q, want %q", where, pod.Namespace, sts.Namespace)
	}
	for _, field := range []struct {
		name      string
		got, want *int64
	}{
		{"runAsUser", pod.Spec.SecurityContext.RunAsUser, svcPod.SecurityContext.RunAsUser},
		{"fsGroup", pod.Spec.SecurityContext.FSGroup, svcPod.SecurityContext.FSGroup},
	} {
		if field.got == nil || field.want == nil || *field.got != *field.want {
			t.Errorf("%s: %s %v, want the service's %v", where, field.name, field.got, field.want)
		}
	}

	// The service's mounts of its claims, by claim template.
	svcMounts := map[string]string{}
	for _, m := range svcPod.Containers[0].VolumeMounts {
		svcMounts[m.Name] = m.MountPath
	}
	helperMounts := map[string]string{} // claim -> mount path
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.PersistentVolumeClaim != nil {
				helperMounts[v.PersistentVolumeClaim.ClaimName] = m.MountPath
			}
		}
	}
	env := containerEnv(&svcPod.Containers[0])
	for _, tmpl := range sts.Spec.VolumeClaimTemplates {
		claim := tmpl.Name + "-" + sts.Name + "-0"
		if got, ok := helperMounts[claim]; !ok || got != svcMounts[tmpl.Name] {
			t.Errorf("%s: claim %s mounted at %q, want the service's %q", where, claim, got, svcMounts[tmpl.Name])
		}
	}
	if len(helperMounts) != len(sts.Spec.VolumeClaimTemplates) {
		t.Errorf("%s: mounts claims %v, want the %d of %s", where, helperMounts, len(sts.Spec.VolumeClaimTemplates), sts.Name)
	}
	copyCmd := "cp " + env["LETHE_BACKUP_DIR"] + "/consent.db " + env["LETHE_DATA"] + "/consent.db"
	if !strings.Contains(string(readme), copyCmd) {
		t.Errorf("deploy/README.md: the restore does not %q (LETHE_BACKUP_DIR, LETHE_DATA of lethe-consent)", copyCmd)
	}
}
