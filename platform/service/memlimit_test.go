package service

import (
	"os"
	"path/filepath"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	v2 := file("memory.max", "2684354560\n")
	unlimited := file("v2-max", "max\n")
	v1Unlimited := file("v1", "9223372036854771712\n")
	missing := filepath.Join(dir, "absent")
	for _, c := range []struct {
		name  string
		files []string
		want  int64
		ok    bool
	}{
		{"a cgroup v2 limit", []string{v2}, 2684354560, true},
		{"the first file that exists counts", []string{missing, v2}, 2684354560, true},
		{"v2 without a limit", []string{unlimited, v2}, 0, false},
		{"v1 without a limit", []string{v1Unlimited}, 0, false},
		{"no cgroup files", []string{missing}, 0, false},
	} {
		if got, ok := containerMemoryLimit(c.files); got != c.want || ok != c.ok {
			t.Errorf("%s: %d, %v; want %d, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestSetMemoryLimitLeavesGOMEMLIMIT(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	if got := SetMemoryLimit(); got != 0 {
		t.Fatalf("set a limit of %d over GOMEMLIMIT", got)
	}
}
