package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/services/consent"
)

// BenchmarkDevStartup starts the built lethe binary on a fresh data folder,
// measures the time until every service answers health SERVING, lets it
// idle for a second and reads its resident memory; with the consent read
// replica lethe dev runs by default (replica) and without it
// (--replica-addr off), in the same run, and with the replica also the
// time until the replica answers SERVING. Run it without -race:
//
//	go test -run '^$' -bench DevStartup -benchtime 5x ./lethe/
func BenchmarkDevStartup(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector inflates start-up time and memory; run without -race")
	}
	bin := buildBinaries(b, ".")["."]
	for _, replica := range []bool{true, false} {
		b.Run(map[bool]string{true: "replica", false: "no-replica"}[replica], func(b *testing.B) { benchDevStartup(b, bin, replica) })
	}
}

func benchDevStartup(b *testing.B, bin string, replica bool) {
	var healthy, replicaHealthy time.Duration
	var maxRSS int64
	for b.Loop() {
		addr, replicaAddr := freeAddr(b), "off"
		if replica {
			replicaAddr = freeAddr(b)
		}
		start := time.Now()
		p := startProcess(b, bin, "dev", "--data", b.TempDir(), "--addr", addr, "--nats-addr", freeAddr(b), "--metrics-addr", "", "--http-addr", "", "--public-addr", "",
			"--replica-addr", replicaAddr, "--replica-http-addr", "off")
		waitServing(b, addr, healthNames, p)
		healthy += time.Since(start)
		if replica {
			waitServing(b, replicaAddr, []string{consent.ServiceName}, p)
			replicaHealthy += time.Since(start)
		}
		b.StopTimer()
		time.Sleep(time.Second)
		if rss := residentKiB(b, p.cmd.Process.Pid); rss > maxRSS {
			maxRSS = rss
		}
		p.stop(b)
		b.StartTimer()
	}
	b.ReportMetric(float64(healthy.Milliseconds())/float64(b.N), "ms-to-healthy")
	if replica {
		b.ReportMetric(float64(replicaHealthy.Milliseconds())/float64(b.N), "ms-to-replica")
	}
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
