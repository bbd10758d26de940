//go:build linux

package tracer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// GPU tests run on a CUDA machine with torch (bpf/gpu/torch_phases.py). They are the only
// tests that skip without their hardware; enable with PROFILEMATE_GPU=1. Settings:
// PROFILEMATE_GPU_DIR (default ../bpf/gpu), PROFILEMATE_GPU_PYTHON (default python3.12).
func requireGPU(t testing.TB) (dir, python string) {
	t.Helper()
	if os.Getenv("PROFILEMATE_GPU") != "1" {
		t.Skip("GPU-only: set PROFILEMATE_GPU=1 on a machine with CUDA, torch and python3.12")
	}
	requirePrivileged(t)
	dir = os.Getenv("PROFILEMATE_GPU_DIR")
	if dir == "" {
		dir = "../bpf/gpu"
	}
	python = os.Getenv("PROFILEMATE_GPU_PYTHON")
	if python == "" {
		python = "python3.12"
	}
	return dir, python
}

type gpuProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startGPU(t testing.TB, dir, python string, args ...string) *gpuProc {
	t.Helper()
	cmd := exec.Command(python, append([]string{filepath.Join(dir, "torch_phases.py")}, args...)...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gpuProc{cmd: cmd, in: in, out: bufio.NewReader(outp)}
	if l, err := g.out.ReadString('\n'); err != nil || !strings.HasPrefix(l, "ready") {
		cmd.Process.Kill()
		t.Fatalf("torch workload: %q %v", l, err)
	}
	return g
}

func (g *gpuProc) close() { g.in.Close(); g.cmd.Process.Kill(); g.cmd.Wait() }

func (g *gpuProc) round(t testing.TB) string {
	io.WriteString(g.in, "go\n")
	l, err := g.out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(l)
}

// TestGPUPhases attaches to a torch process on a real libcuda and checks the attribution of
// what PyTorch calls (elementwise kernels, cuBLAS GEMMs, a CUDA-graph replay, H2D/D2H copies,
// syncs) to the vLLM-shaped phases of bpf/gpu/vllm_shaped.
func TestGPUPhases(t *testing.T) {
	dir, python := requireGPU(t)
	const steps = 50
	g := startGPU(t, dir, python, "phases", fmt.Sprint(steps))
	defer g.close()
	tab, _ := LoadPhaseTable("")
	tr, err := New(Config{Phases: tab})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Attach(g.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, c.sink) }()
	t.Logf("round: %s", g.round(t))
	time.Sleep(300 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := counterCounts(tr, tab, g.cmd.Process.Pid)
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%-55s %d", k, got[k])
	}
	sum := func(phase string, apis ...string) (n uint64) {
		for k, v := range got {
			for _, a := range apis {
				if strings.HasPrefix(k, phase+"/"+a) {
					n += v
				}
			}
		}
		return n
	}
	if n := sum("runner.execute_model", "cuGraphLaunch"); n != steps {
		t.Errorf("graph replays in execute_model: %d, want %d", n, steps)
	}
	if n := sum("scheduler.schedule", "cuMemcpyHtoDAsync", "cuMemcpyAsync"); n < steps {
		t.Errorf("H2D copies in schedule: %d, want >= %d", n, steps)
	}
	if n := sum("runner.sample_tokens", "cuMemcpyDtoHAsync", "cuMemcpyAsync"); n < steps {
		t.Errorf("D2H copies in sample_tokens: %d, want >= %d", n, steps)
	}
	if n := sum("sampler.forward", "cuLaunchKernel"); n < steps {
		t.Errorf("sampler kernels: %d, want >= %d", n, steps)
	}
	if n := sum("runner.execute_model", "cuLaunchKernel"); n < 2*steps {
		t.Errorf("execute_model kernels (GEMM + elementwise): %d, want >= %d", n, 2*steps)
	}
	if n := sum("runner.prepare_inputs", "cuLaunchKernel"); n < steps {
		t.Errorf("prepare_inputs kernels: %d, want >= %d", n, steps)
	}
	if n := sum("scheduler.update", "cuLaunchKernel"); n < steps {
		t.Errorf("update_from_output kernels: %d, want >= %d", n, steps)
	}
	if n := sum("engine.step", "cuCtxSynchronize", "cuStreamSynchronize", "cuEventSynchronize"); n < steps {
		t.Errorf("torch.cuda.synchronize in step: %d syncs, want >= %d (which API does it use? see the table)", n, steps)
	}
	st := tr.Stats()
	if len(st.Drops) != 0 {
		t.Errorf("drops %v", st.Drops)
	}
	t.Logf("stats: %d launches, %d syncs, %d code objects named, uprobe_multi=%v, procs %+v", st.Launches, st.Syncs, st.CodesNamed, st.UprobeMulti, st.Procs)
}

// BenchmarkGPUEager: throughput of an eager torch loop (x.add_(1), one cuLaunchKernel each)
// without and with the tracer attached, the loop 0 and 40 frames below execute_model.
// Run: tracer.test -test.run '^$' -test.bench GPUEager -test.benchtime 1x
func BenchmarkGPUEager(b *testing.B) {
	dir, python := requireGPU(b)
	for _, depth := range []int{0, 40} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			g := startGPU(b, dir, python, "eager", "20000", fmt.Sprint(depth))
			defer g.close()
			best := func() float64 {
				m := 0.0
				for i := 0; i < 5; i++ {
					var v float64
					fmt.Sscanf(g.round(b), "ops %f", &v)
					m = max(m, v)
				}
				return m
			}
			base := best()
			tr, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer tr.Close()
			if err := tr.Attach(g.cmd.Process.Pid); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { tr.Run(ctx, func(int, []byte) error { return nil }); close(done) }()
			traced := best()
			cancel()
			<-done
			b.ReportMetric(base, "untraced-ops/s")
			b.ReportMetric(traced, "traced-ops/s")
			b.ReportMetric(100*(base-traced)/base, "slowdown-%")
			b.ReportMetric(1e9/traced-1e9/base, "added-ns/op")
		})
	}
}
