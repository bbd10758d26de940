package inject

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// parkedSyscalls are the x86-64 system calls a thread may be stopped in for a remote call: each
// blocks waiting for an event, holds no lock of the C library while it waits, and is restarted
// (or returns EINTR, which every caller of these must handle anyway) when the thread resumes.
// The rank orders candidates: lower is preferred. Waits outside futex come first: a futex wait
// is usually a condition or lock wait inside library code, more often with other locks held.
var parkedSyscalls = map[int]struct {
	name string
	rank int
}{
	0:   {"read", 1},
	7:   {"poll", 0},
	23:  {"select", 0},
	35:  {"nanosleep", 1},
	43:  {"accept", 0},
	45:  {"recvfrom", 1},
	47:  {"recvmsg", 1},
	61:  {"wait4", 1},
	202: {"futex", 3},
	230: {"clock_nanosleep", 1},
	232: {"epoll_wait", 0},
	247: {"waitid", 1},
	270: {"pselect6", 0},
	271: {"ppoll", 0},
	281: {"epoll_pwait", 0},
	288: {"accept4", 0},
	441: {"epoll_pwait2", 0},
	34:  {"pause", 0},
	130: {"rt_sigsuspend", 2},
	128: {"rt_sigtimedwait", 2},
}

// syscallName names an x86-64 system call number for messages.
func syscallName(nr int) string {
	if s, ok := parkedSyscalls[nr]; ok {
		return s.name
	}
	return "syscall " + strconv.Itoa(nr)
}

// candidate is a thread parked in a blocking system call.
type candidate struct {
	tid  int
	nr   int
	sp   uint64
	rank int
	comm string
}

// threadState is what /proc says one thread is doing.
type threadState struct {
	tid   int
	comm  string
	state byte // R, S, D, …
	nr    int  // system call number, -1 when not in one ("running" or in user code)
	sp    uint64
}

func readThreads(pid int) ([]threadState, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []threadState
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ts := threadState{tid: tid, nr: -1}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "comm")); err == nil {
			ts.comm = strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat")); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
				ts.state = b[i+2]
			}
		}
		// "nr arg1 … arg6 sp pc", "running", or "-1 sp pc" (not in a system call).
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "syscall")); err == nil {
			f := strings.Fields(string(b))
			if len(f) == 9 {
				ts.nr, _ = strconv.Atoi(f[0])
				ts.sp, _ = strconv.ParseUint(strings.TrimPrefix(f[7], "0x"), 16, 64)
			}
		} else if os.IsPermission(err) {
			return nil, fmt.Errorf("reading %s: %w (needs root or CAP_SYS_PTRACE)", filepath.Join(dir, e.Name(), "syscall"), err)
		}
		out = append(out, ts)
	}
	return out, nil
}

// parkedThreads returns the threads of pid that sat in the same blocking system call at two
// samples gap apart (sleeping, not just passing through), best first.
func parkedThreads(pid int, sample func() ([]threadState, error), skip map[int]bool) ([]candidate, error) {
	a, err := sample()
	if err != nil {
		return nil, err
	}
	b, err := sample()
	if err != nil {
		return nil, err
	}
	first := map[int]threadState{}
	for _, t := range a {
		first[t.tid] = t
	}
	var out []candidate
	for _, t := range b {
		p, ok := first[t.tid]
		if !ok || skip[t.tid] || t.state != 'S' || p.state != 'S' || t.nr != p.nr || t.nr < 0 {
			continue
		}
		s, ok := parkedSyscalls[t.nr]
		if !ok {
			continue
		}
		out = append(out, candidate{tid: t.tid, nr: t.nr, sp: t.sp, rank: s.rank, comm: t.comm})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].rank != out[j].rank {
			return out[i].rank < out[j].rank
		}
		// The main thread last among equals: its stack and state matter most to the program.
		if (out[i].tid == pid) != (out[j].tid == pid) {
			return out[j].tid == pid
		}
		return out[i].tid < out[j].tid
	})
	return out, nil
}

// describeThreads summarises what every thread is doing, for the "no safe point" error.
func describeThreads(ts []threadState) string {
	var parts []string
	for i, t := range ts {
		if i == 8 {
			parts = append(parts, fmt.Sprintf("… %d more", len(ts)-i))
			break
		}
		what := "running"
		if t.nr >= 0 {
			what = syscallName(t.nr)
		}
		parts = append(parts, fmt.Sprintf("%d %q %c %s", t.tid, t.comm, t.state, what))
	}
	return strings.Join(parts, "; ")
}
