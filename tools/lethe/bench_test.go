package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDevStartup starts the built lethe binary on a fresh data folder,
// measures the time until every service answers health SERVING, lets it
// idle for a second and reads its resident memory. Run it without -race:
//
//	go test -run '^$' -bench DevStartup -benchtime 5x ./lethe/
func BenchmarkDevStartup(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector inflates start-up time and memory; run without -race")
	}
	bin := buildBinaries(b, ".")["."]
	var healthy time.Duration
	var maxRSS int64
	for b.Loop() {
		addr := freeAddr(b)
		start := time.Now()
		p := startProcess(b, bin, "dev", "--data", b.TempDir(), "--addr", addr, "--nats-addr", freeAddr(b), "--metrics-addr", "", "--http-addr", "", "--public-addr", "")
		waitServing(b, addr, healthNames, p)
		healthy += time.Since(start)
		b.StopTimer()
		time.Sleep(time.Second)
		if rss := residentKiB(b, p.cmd.Process.Pid); rss > maxRSS {
			maxRSS = rss
		}
		p.stop(b)
		b.StartTimer()
	}
	b.ReportMetric(float64(healthy.Milliseconds())/float64(b.N), "ms-to-healthy")
	b.ReportMetric(float64(maxRSS)/1024, "MiB-idle-rss")
}

// residentKiB reads VmRSS of a process from /proc.
func residentKiB(tb testing.TB, pid int) int64 { return statusKiB(tb, pid, "VmRSS") }

// statusKiB reads a field given in kB (VmRSS, VmHWM) of a process's
// /proc status.
func statusKiB(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kib
		}
	}
	tb.Fatalf("no %s in /proc status", field)
	return 0
}
