//go:build linux

package tracer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// BenchmarkProbedLaunch measures the cost the probe adds to one libcuda call made from Python,
// with the phase frame right above the caller (depth 0: 2-frame walk) and 40 frames further up
// (deep walk). It reports the best of several rounds untraced and traced (ns/call) and their
// difference (probe-ns/call). Run: go test -run '^$' -bench ProbedLaunch ./tracer/
func BenchmarkProbedLaunch(b *testing.B) {
	requirePrivileged(b)
	for _, depth := range []int{0, 10, 40} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			base, traced := benchLaunch(b, depth)
			b.ReportMetric(base, "untraced-ns/call")
			b.ReportMetric(traced, "traced-ns/call")
			b.ReportMetric(traced-base, "probe-ns/call")
		})
	}
}

func benchLaunch(b *testing.B, depth int) (base, traced float64) {
	const calls, rounds, reps = 100000, 3, 3
	cmd := exec.Command("python3", "testdata/bench.py", fmt.Sprint(calls), fmt.Sprint(depth), fmt.Sprint(rounds))
	cmd.Env = append(os.Environ(), "PM_FAKECUDA="+fakeCuda(b))
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { in.Close(); cmd.Process.Kill(); cmd.Wait() }()
	out := bufio.NewReader(outp)
	if l, _ := out.ReadString('\n'); !strings.HasPrefix(l, "ready") {
		b.Fatalf("bench target: %q", l)
	}
	measure := func() float64 {
		best := 0.0
		for i := 0; i < reps; i++ {
			io.WriteString(in, "go\n")
			l, err := out.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			var v float64
			fmt.Sscanf(l, "ns %f", &v)
			if best == 0 || v < best {
				best = v
			}
		}
		return best
	}
	base = measure()
	tr, err := New(Config{CountersOnly: os.Getenv("PM_BENCH_COUNTERS_ONLY") != ""})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Attach(cmd.Process.Pid); err != nil {
		b.Fatal(err)
	}
	if os.Getenv("PM_BENCH_NO_WALK") != "" { // trap + counters only: no CPython config
		tr.pyconf.Delete(uint32(cmd.Process.Pid))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx, func(int, []byte) error { return nil }); close(done) }()
	traced = measure()
	cancel()
	<-done
	var n uint64
	for _, c := range tr.Counters() {
		n += c.Count
	}
	if want := uint64(calls * rounds * reps); n != want {
		b.Errorf("counted %d calls, want %d", n, want)
	}
	return base, traced
}
