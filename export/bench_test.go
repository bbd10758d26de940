package export

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
)

// BenchmarkExport reports raw events per second for Load + WriteDerived of a synthetic
// session (run with -cpu 1 for the per-core number), and bundle bytes per kernel event.
func BenchmarkExport(b *testing.B) {
	o := exporttest.DefaultSynthetic
	o.Steps = 5000
	sb, events := exporttest.Synthetic(o)
	base := b.TempDir()
	dir := filepath.Join(base, "session_20260101_000000")
	if err := sb.Write(dir); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	var kernels int
	for i := 0; i < b.N; i++ {
		s, err := Load(dir)
		if err != nil {
			b.Fatal(err)
		}
		out := filepath.Join(base, "out")
		os.RemoveAll(out)
		os.Mkdir(out, 0o700)
		if _, err := WriteDerived(s, out); err != nil {
			b.Fatal(err)
		}
		kernels = 0
		for _, st := range s.Streams {
			kernels += len(st.Kernels) + len(st.Graphs)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(events)*float64(b.N)/(cpuTime()-cpu0), "events/cpu-s")
	bundle := filepath.Join(base, "s"+BundleSuffix)
	if err := WriteBundle(dir, bundle); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(bundle)
	b.ReportMetric(float64(st.Size())/float64(kernels), "bundle-bytes/kernel")
}

// cpuTime is this process's user+system CPU seconds (robust to other load on the machine).
func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
