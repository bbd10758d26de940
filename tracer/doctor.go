//go:build linux

package tracer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// Check statuses.
const (
	StatusOK   = "ok"
	StatusWarn = "warn" // works, degraded
	StatusFail = "fail" // this part will not work
)

// Check is one doctor finding.
type Check struct {
	Name   string // short id: kernel, btf, privileges, bpf_loop, uprobe_multi, ringbuf, pid, libcuda, cpython, timens
	Status string
	Detail string // what was found
	Fix    string // what to do when not ok
}

// Doctor checks what eBPF attribution needs on this machine and, when pid > 0, in that process.
// It never loads programs into the kernel beyond the feature probes of cilium/ebpf.
func Doctor(pid int) []Check {
	var out []Check
	add := func(c Check) { out = append(out, c) }

	var u unix.Utsname
	rel := "unknown"
	if unix.Uname(&u) == nil {
		rel = unix.ByteSliceToString(u.Release[:])
	}
	maj, min := kernelVersion(rel)
	k := Check{Name: "kernel", Status: StatusOK, Detail: "Linux " + rel}
	if maj < 5 || (maj == 5 && min < 17) {
		k.Status, k.Fix = StatusFail, "the frame walk needs bpf_loop (Linux >= 5.17); upgrade the kernel"
	}
	add(k)

	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		add(Check{Name: "btf", Status: StatusFail, Detail: "/sys/kernel/btf/vmlinux missing", Fix: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (all major distributions since 2021)"})
	} else {
		add(Check{Name: "btf", Status: StatusOK, Detail: "/sys/kernel/btf/vmlinux"})
	}

	if err := checkPrivileges(); err != nil {
		add(Check{Name: "privileges", Status: StatusFail, Detail: err.Error(), Fix: "run as root, or grant CAP_BPF,CAP_PERFMON,CAP_SYS_PTRACE (containers: privileged or those capabilities, hostPID: true)"})
		return out // the feature probes below need privileges
	}
	add(Check{Name: "privileges", Status: StatusOK, Detail: fmt.Sprintf("euid %d", os.Geteuid())})

	if err := features.HaveProgramHelper(ebpf.Kprobe, asm.FnLoop); err != nil {
		add(Check{Name: "bpf_loop", Status: StatusFail, Detail: err.Error(), Fix: "Linux >= 5.17 needed for the Python frame walk"})
	} else {
		add(Check{Name: "bpf_loop", Status: StatusOK, Detail: "available"})
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		add(Check{Name: "ringbuf", Status: StatusFail, Detail: err.Error(), Fix: "Linux >= 5.8 needed"})
	} else {
		add(Check{Name: "ringbuf", Status: StatusOK, Detail: "available"})
	}
	if err := features.HaveBPFLinkUprobeMulti(); err != nil {
		add(Check{Name: "uprobe_multi", Status: StatusWarn, Detail: err.Error(), Fix: "Linux >= 6.6 attaches all libcuda probes with one link; older kernels use one perf uprobe per symbol (works, slower to attach)"})
	} else {
		add(Check{Name: "uprobe_multi", Status: StatusOK, Detail: "available"})
	}
	if pid <= 0 {
		return out
	}
	return append(out, doctorPid(pid)...)
}

func doctorPid(pid int) []Check {
	var out []Check
	maps, err := pyproc.ReadMaps(pid)
	if err != nil {
		fix := "check the pid (host pid namespace: run the tracer with hostPID)"
		return append(out, Check{Name: "pid", Status: StatusFail, Detail: err.Error(), Fix: fix})
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	out = append(out, Check{Name: "pid", Status: StatusOK, Detail: fmt.Sprintf("%d (%s), %d descendants", pid, strings.TrimSpace(string(comm)), len(descendants(pid)))})

	lib := pyproc.FindLibrary(maps, "libcuda.so")
	if lib == "" {
		out = append(out, Check{Name: "libcuda", Status: StatusWarn, Detail: "libcuda.so not mapped in this process",
			Fix: "attach to the process that runs CUDA (vLLM: EngineCore or the GPU workers, descendants are followed), or wait until it initialised CUDA"})
	} else if syms, err := ExportedSymbols(pyproc.HostPath(pid, lib)); err != nil {
		out = append(out, Check{Name: "libcuda", Status: StatusFail, Detail: err.Error(), Fix: "the library must be readable through /proc/PID/root (CAP_SYS_PTRACE)"})
	} else {
		n := len(Plan(syms))
		st := StatusOK
		if n == 0 {
			st = StatusFail
		}
		out = append(out, Check{Name: "libcuda", Status: st, Detail: fmt.Sprintf("%s: %d probe sites", lib, n)})
	}

	py, err := pyproc.Open(pid)
	switch {
	case err == nil:
		threads, verr := py.Validate()
		if verr != nil {
			out = append(out, Check{Name: "cpython", Status: StatusFail, Detail: verr.Error(), Fix: "this CPython build's layout is not the expected one: please report the version and build"})
		} else {
			det := fmt.Sprintf("CPython %s (%s), %d threads", py.VersionString(), py.Path, len(threads))
			if py.Layout.FromDebugOffsets {
				det += ", offsets from _Py_DebugOffsets"
			}
			st := StatusOK
			fix := ""
			if k, err := py.GilstateKey(threads); err != nil {
				st, fix = StatusWarn, "threads created after attach are found through a rescan (first launches of a new thread may lack a phase): "+err.Error()
			} else {
				det += fmt.Sprintf(", gilstate key %d", k)
			}
			if err := CheckPyConf(PyConf(py)); err != nil {
				st, fix = StatusFail, err.Error()
			}
			out = append(out, Check{Name: "cpython", Status: st, Detail: det, Fix: fix})
		}
		py.Close()
	case errors.Is(err, pyproc.ErrNotPython):
		out = append(out, Check{Name: "cpython", Status: StatusWarn, Detail: err.Error(), Fix: "launches are counted without Python phases"})
	default:
		out = append(out, Check{Name: "cpython", Status: StatusWarn, Detail: err.Error(), Fix: "launches are counted without Python phases; supported: CPython 3.10-3.13 (default GIL build)"})
	}

	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "monotonic" && (f[1] != "0" || f[2] != "0") {
				out = append(out, Check{Name: "timens", Status: StatusWarn, Detail: "time namespace shifts CLOCK_MONOTONIC by " + f[1] + "s " + f[2] + "ns",
					Fix: "eBPF timestamps are host CLOCK_MONOTONIC; the in-process sources see the shifted clock"})
			}
		}
	}
	return out
}

func kernelVersion(rel string) (int, int) {
	f := strings.FieldsFunc(rel, func(r rune) bool { return r == '.' || r == '-' })
	if len(f) < 2 {
		return 0, 0
	}
	a, _ := strconv.Atoi(f[0])
	b, _ := strconv.Atoi(f[1])
	return a, b
}
