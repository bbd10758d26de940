// Package meta describes a capture in metadata.json: host, GPUs, software versions,
// command, processes, streams and every count of lost data.
package meta

import (
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Metadata is the content of a session's metadata.json.
type Metadata struct {
	Tool     string   `json:"tool"`
	Version  string   `json:"version"`
	Session  string   `json:"session"`
	Mode     string   `json:"mode"` // run, attach, daemon
	Command  []string `json:"command,omitempty"`
	ExitCode *int     `json:"exit_code,omitempty"`

	StartTime        time.Time `json:"start_time"`
	EndTime          time.Time `json:"end_time"`
	DurationSec      float64   `json:"duration_sec"`
	Clock            string    `json:"clock"`
	StartMonotonicNs uint64    `json:"start_monotonic_ns"`
	EndMonotonicNs   uint64    `json:"end_monotonic_ns"`
	// WallMinusMonotonicNs converts record timestamps to Unix time: unix_ns = ts + this.
	WallMinusMonotonicNs int64 `json:"wall_minus_monotonic_ns"`

	Detail string `json:"detail"`
	Host   Host   `json:"host"`
	GPU    GPU    `json:"gpu"`

	Processes []Process         `json:"processes"`
	Streams   any               `json:"streams"`
	Drops     Drops             `json:"drops"`
	Sources   map[string]string `json:"sources"`
	// PyhookPatches is the state of every Python-hook patch per process (installed,
	// unavailable in this vLLM version, disabled, failed).
	PyhookPatches any `json:"pyhook_patches,omitempty"`
	// Injection says how attach --inject loaded the agent and the hook (internal/inject.Injection).
	Injection any `json:"injection,omitempty"`
	// ContendedRings are rings another tracer was reading (internal/collect.Contention).
	ContendedRings any      `json:"contended_rings,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
}

// Host describes the machine.
type Host struct {
	Hostname string `json:"hostname"`
	Kernel   string `json:"kernel"`
	Arch     string `json:"arch"`
	CPUs     int    `json:"cpus"`
}

// GPU describes the GPUs and the driver, from NVML when present.
type GPU struct {
	Available         bool        `json:"available"`
	Reason            string      `json:"reason,omitempty"`
	DriverVersion     string      `json:"driver_version,omitempty"`
	CudaDriverVersion int         `json:"cuda_driver_version,omitempty"`
	Devices           []GPUDevice `json:"devices,omitempty"`
	// CuptiVersions are the cuptiGetVersion() values the agents reported, by pid.
	CuptiVersions map[string]uint32 `json:"cupti_versions,omitempty"`
}

// GPUDevice is one GPU.
type GPUDevice struct {
	Index       int    `json:"index"`
	Name        string `json:"name"`
	UUID        string `json:"uuid"`
	MemoryBytes uint64 `json:"memory_bytes"`
}

// Process is one traced process.
type Process struct {
	Pid     int      `json:"pid"`
	Ppid    int      `json:"ppid,omitempty"`
	Comm    string   `json:"comm,omitempty"`
	Cmdline []string `json:"cmdline,omitempty"`
}

// Drops sums every count of lost records. Nothing is lost silently.
type Drops struct {
	RingRecords   uint64 `json:"ring_records_dropped"`
	RingBytes     uint64 `json:"ring_bytes_dropped"`
	SourceRecords uint64 `json:"source_records_dropped"`
	Total         uint64 `json:"total"`
}

// NewHost reads the host description.
func NewHost() Host {
	h := Host{Arch: runtime.GOARCH, CPUs: runtime.NumCPU()}
	h.Hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		h.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return h
}

// MonotonicNs reads CLOCK_MONOTONIC.
func MonotonicNs() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// WallMinusMonotonic returns the offset from CLOCK_MONOTONIC to Unix time, bracketed by two
// monotonic reads so the error is at most their gap.
func WallMinusMonotonic() int64 {
	a := MonotonicNs()
	w := time.Now().UnixNano()
	b := MonotonicNs()
	return w - int64(a+(b-a)/2)
}

// Marshal renders m as indented JSON.
func (m *Metadata) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// CleanVersion trims NVML's NUL padding.
func CleanVersion(s string) string { return strings.TrimRight(s, "\x00 ") }
