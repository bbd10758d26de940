// Command pmexport-bench measures export speed and bundle size on a synthetic session:
//
//	go run ./export/cmd/pmexport-bench [-steps N] [-keep DIR]
//
// It generates a vLLM-like session (exporttest.Synthetic), writes it, then times
// export.Load + export.WriteDerived on one core (GOMAXPROCS=1) and reports raw events per
// second (wall and CPU), and the .tar.zst bundle size per kernel event (kernels + graph
// replays).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/export/exporttest"
)

func main() {
	o := exporttest.DefaultSynthetic
	flag.IntVar(&o.Steps, "steps", 20000, "forward passes to generate")
	flag.IntVar(&o.DecodeKernels, "decode-kernels", o.DecodeKernels, "eager kernels per decode step")
	flag.IntVar(&o.PrefillKernels, "prefill-kernels", o.PrefillKernels, "eager kernels per prefill step")
	flag.BoolVar(&o.StableDurations, "stable", false, "per-kernel durations with ±2% jitter (realistic) instead of uniformly random ones (pessimistic)")
	keep := flag.String("keep", "", "write the session here and keep it")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	if err := run(o, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "pmexport-bench:", err)
		os.Exit(1)
	}
}

func run(o exporttest.SyntheticOptions, keep string) error {
	b, events := exporttest.Synthetic(o)
	base := keep
	if base == "" {
		d, err := os.MkdirTemp("", "pmexport-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		base = d
	}
	dir := filepath.Join(base, "session_20260101_000000")
	if err := b.Write(dir); err != nil {
		return err
	}
	start, cpu0 := time.Now(), cpuTime()
	s, err := export.Load(dir)
	if err != nil {
		return err
	}
	loaded := time.Since(start)
	if _, err := export.WriteDerived(s, dir); err != nil {
		return err
	}
	el, cpu := time.Since(start), cpuTime()-cpu0
	full := filepath.Join(base, "full"+export.BundleSuffix)
	bstart, bcpu := time.Now(), cpuTime()
	if err := export.WriteBundle(dir, full); err != nil {
		return err
	}
	bwall, bcpuUsed := time.Since(bstart), cpuTime()-bcpu
	kernels := 0
	var rawBytes int64
	for _, st := range s.Streams {
		kernels += len(st.Kernels) + len(st.Graphs)
	}
	filepath.Walk(filepath.Join(dir, "raw"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rawBytes += fi.Size()
		}
		return nil
	})
	fb, _ := os.Stat(full)
	fmt.Printf("steps %d, raw events %d, kernel events (kernels + graph replays) %d, raw stream bytes %d\n", o.Steps, events, kernels, rawBytes)
	fmt.Printf("export (load %v + derive/write %v wall, %.3f s CPU) on 1 core: %.2f M raw events/s wall, %.2f M raw events per CPU second\n",
		loaded.Round(time.Millisecond), (el - loaded).Round(time.Millisecond), cpu, float64(events)/el.Seconds()/1e6, float64(events)/cpu/1e6)
	fmt.Printf("bundle (metadata.json + raw streams, columnar + zstd): %d bytes, %.2f bytes per kernel event (raw streams: %.1f bytes per kernel event)\n",
		fb.Size(), float64(fb.Size())/float64(kernels), float64(rawBytes)/float64(kernels))
	fmt.Printf("bundle written in %v wall, %.3f s CPU (%.0f MB/s of raw streams per CPU second)\n", bwall.Round(time.Millisecond), bcpuUsed, float64(rawBytes)/bcpuUsed/1e6)
	return nil
}

func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
