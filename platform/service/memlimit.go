package service

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of the container's memory limit the Go
// runtime is asked to stay under: the rest is for what the runtime does
// not count (bbolt's mapped pages, thread stacks, the kernel's buffers).
const memoryLimitShare = 0.9

// cgroupMemoryFiles are where a container's memory limit is read: cgroup
// v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// SetMemoryLimit gives the Go runtime a soft memory limit of
// memoryLimitShare of the container's, unless GOMEMLIMIT sets one, and
// returns it (0 when it set none). Without it the collector lets the heap
// grow to twice what is live before it runs, so a service building a
// large index (consent reading every record at 10M subjects holds 2 GiB
// and peaked at 4.2 GiB) is killed for memory it would have freed; with
// it the collector runs harder as the limit nears instead.
func SetMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	limit, ok := containerMemoryLimit(cgroupMemoryFiles)
	if !ok {
		return 0
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft
}

// containerMemoryLimit reads the first of files that exists: a number of
// bytes, or "max" (cgroup v2) or a page-rounded maximum (cgroup v1) for
// none.
func containerMemoryLimit(files []string) (int64, bool) {
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// cgroup v1 writes "no limit" as the largest page multiple below
		// 2^63; anything above 2^62 bytes is no limit in practice.
		if err != nil || v <= 0 || v > 1<<62 {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
