// Command shardsim simulates splitting one very large tenant's consent
// state over k writers by a hash of the subject id (docs/scale.md,
// "Splitting one tenant"). Lethe shards consent by tenant today; this is
// the model of the next step, not an implementation of it. It prints, for
// rendezvous and jump hashing:
//
//   - how many subjects move when a tenant goes from k to k+1 partitions
//     (the expectation is 1/(k+1), all of them to the new partition);
//   - how evenly k partitions share the subjects and the writes when
//     subject activity is Zipf-skewed, against the floor the single
//     busiest subject sets;
//   - what per-(tenant, partition) revisions do to consistency tokens and
//     Watch.
//
// Run it with
//
//	cd tools && go run ./shardsim
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	subjects := flag.Int("subjects", 1_000_000, "subjects of the simulated tenant")
	writes := flag.Int("writes", 2_000_000, "writes drawn for the balance")
	zipfS := flag.Float64("zipf", 1.0, "Zipf exponent of subject activity (0 = uniform)")
	ks := flag.String("k", "1,2,3,4,8,16", "partition counts to simulate")
	seed := flag.Uint64("seed", 1, "seed of the activity draw")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*ks, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			fmt.Fprintf(os.Stderr, "shardsim: -k: %q is not a positive count\n", f)
			os.Exit(2)
		}
		counts = append(counts, k)
	}
	report(os.Stdout, *subjects, *writes, *zipfS, counts, *seed)
}

// report prints the simulation's figures.
func report(w io.Writer, subjects, writes int, s float64, counts []int, seed uint64) {
	fmt.Fprintf(w, "tenant of %d subjects; %d writes, Zipf s=%.2f (busiest subject %.2f%% of writes)\n\n",
		subjects, writes, s, 100*hottestShare(s, subjects))
	for _, p := range []partitioner{rendezvous{}, jump{}} {
		fmt.Fprintf(w, "%s hashing\n", p.name())
		fmt.Fprintf(w, "  %-8s %-12s %-10s %-10s %-17s %-14s\n", "k→k+1", "moved", "expected", "elsewhere", "subjects max/mean", "writes max/mean")
		for _, k := range counts {
			moved, elsewhere := moves(p, subjects, k)
			b := simulate(p, subjects, k, writes, s, seed)
			fmt.Fprintf(w, "  %-8s %-12s %-10s %-10d %-17.3f %-14.3f\n", fmt.Sprintf("%d→%d", k, k+1),
				fmt.Sprintf("%.2f%%", 100*float64(moved)/float64(subjects)), fmt.Sprintf("%.2f%%", 100/float64(k+1)),
				elsewhere, maxOverMean(b.subjects), maxOverMean(b.writes))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "revisions and tokens")
	for _, k := range counts {
		fmt.Fprintf(w, "  k=%-3d a write's token: (partition, revision), 16 bytes; a tenant-wide Watch resumes from %d revisions (%d bytes);\n"+
			"         a Check waits for its subject's partition only; k→k+1 invalidates the Watch positions of %.1f%% of subjects (they change log)\n",
			k, k, 8*k, 100/float64(k+1))
	}
}
