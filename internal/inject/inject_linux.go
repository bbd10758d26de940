package inject

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/internal/collect"
	"github.com/profilemate/profilemate-trace/internal/pyproc"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// Inject loads the agent (and, for CPython, the hook) into pid and each descendant that runs
// CPython or has libcuda mapped, by opts.Method. A process that already has an agent (a
// preloaded one, or a ring of its own) is left alone. On error nothing stays staged, and every
// process loaded before the failure is detached again.
func Inject(ctx context.Context, pid int, opts Options) (*Injection, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.SafePointWait <= 0 {
		opts.SafePointWait = DefaultSafePointWait
	}
	inj := &Injection{Requested: opts.Method, log: opts.Log}
	if opts.Method == MethodNever || opts.Method == "" {
		return inj, nil
	}
	for _, p := range collect.Descendants([]int{pid}) {
		pr, err := injectOne(ctx, p, p == pid, opts)
		if pr != nil {
			inj.Processes = append(inj.Processes, pr)
		}
		if err != nil {
			derr := inj.Detach(DefaultDetachWait)
			return nil, errors.Join(err, derr)
		}
	}
	if len(inj.Processes) == 0 {
		return inj, fmt.Errorf("pid %d: %w: no CPython or CUDA process in its tree", pid, ErrRefused)
	}
	return inj, nil
}

// target describes one process for the choice of method.
type target struct {
	python    string // "3.12.1", "" when not CPython
	minor     int
	cuda      bool
	preloaded string // path of a libprofilemate.so not loaded by us
	ring      bool   // an agent ring already exists
}

var pyExeRe = regexp.MustCompile(`(?:^|/)(?:lib)?python3\.(\d+)[a-z]*(?:\.so[.0-9]*)?$`)

func inspect(pid int) (target, error) {
	var t target
	maps, err := pyproc.ReadMaps(pid)
	if err != nil {
		return t, err
	}
	for _, m := range maps {
		p := strings.TrimSuffix(m.Path, " (deleted)")
		switch {
		case strings.Contains(p, "libcuda.so"):
			t.cuda = true
		case strings.HasSuffix(p, "/"+agentName) && !isStagedAgent(m):
			t.preloaded = p
		}
		if mm := pyExeRe.FindStringSubmatch(p); mm != nil && t.python == "" {
			t.minor, _ = strconv.Atoi(mm[1])
			t.python = "3." + mm[1]
		}
	}
	if t.python != "" {
		if pp, err := pyproc.Open(pid); err == nil {
			t.python, t.minor = pp.VersionString(), pp.Minor
			pp.Close()
		} else if major, minor, err := PythonVersion(pid); err == nil && major == 3 {
			t.python, t.minor = fmt.Sprintf("3.%d", minor), minor
		}
	}
	if found, err := ring.Find(pid); err == nil {
		for _, f := range found {
			if f.Source == ring.SourceCUPTI.String() {
				t.ring = true
			}
		}
	}
	return t, nil
}

func injectOne(ctx context.Context, pid int, root bool, opts Options) (*Process, error) {
	t, err := inspect(pid)
	if err != nil {
		if !root {
			return nil, nil // a child that exited meanwhile
		}
		return nil, fmt.Errorf("inspecting pid %d: %w", pid, err)
	}
	pr := &Process{Pid: pid, Python: t.python}
	switch {
	case t.ring || t.preloaded != "":
		pr.Method = "preloaded"
		pr.Skipped = "an agent is already loaded"
		if t.preloaded != "" {
			pr.Skipped += " (" + t.preloaded + ")"
		}
		return pr, nil
	case t.python == "" && !t.cuda:
		if !root {
			return nil, nil
		}
		pr.Method = "skipped"
		pr.Skipped = "neither CPython nor libcuda mapped"
		return pr, nil
	}
	method := opts.Method
	if method == MethodAuto {
		if t.python == "" || t.minor < 14 {
			what := "a process without CPython"
			if t.python != "" {
				what = "CPython " + t.python
			}
			return pr, fmt.Errorf("pid %d runs %s: --inject=auto loads only through PEP 768 (CPython 3.14 and later, at the interpreter's own safe point). "+
				"--inject=ptrace can load into it instead: it stops one thread parked in a blocking system call for a few milliseconds and runs the dynamic loader on it; "+
				"it needs root or CAP_SYS_PTRACE: %w", pid, what, ErrRefused)
		}
		method = MethodRemoteExec
	}
	if method == MethodRemoteExec && (t.python == "" || t.minor < 14) {
		return pr, fmt.Errorf("pid %d: --inject=remote-exec needs CPython 3.14 or later (found %q): %w", pid, t.python, ErrRefused)
	}
	start := time.Now()
	pr.startedNs = ring.MonotonicNs()
	st, err := Stage(pid, StageConfig{Agent: opts.Agent, PyHook: pyhookFor(t, opts), PyhookFromAgent: method == MethodPtrace,
		Start: opts.Start})
	if err != nil {
		return pr, err
	}
	pr.stage, pr.StagingDir, pr.Method = st, st.Dir, string(method)
	switch method {
	case MethodPtrace:
		warn := opts.Warn
		if warn == nil {
			warn = func(s string) { opts.Log.Warn(s) }
		}
		lr, err := ptraceLoad(ctx, loadRequest{pid: pid, lib: st.Agent, conf: st.Conf, libInode: st.AgentInode,
			safePointWait: opts.SafePointWait, warn: warn})
		if lr != nil {
			pr.Tid, pr.Syscall = lr.Tid, lr.Syscall
			pr.ThreadStoppedMs = ms(lr.ThreadStopped)
			pr.AgentReused = lr.Reused != ""
		}
		if err != nil {
			err = withLog(err, st)
			if lr == nil || lr.StartResult < 0 || !lr.Started {
				// Nothing runs in the target: take the staging back now.
				pr.Method = "failed"
				st.Remove()
			}
			return pr, err
		}
		rc := lr.StartResult
		pr.StartResult = &rc
	case MethodRemoteExec:
		fail := func(err error) (*Process, error) {
			pr.Method = "failed"
			st.Remove()
			return pr, err
		}
		script, err := st.writeScript()
		if err != nil {
			return fail(err)
		}
		wctx, cancel := context.WithTimeout(ctx, DefaultRemoteExecWait)
		err = RemoteExecWait(wctx, pid, script)
		cancel()
		if err != nil {
			return fail(fmt.Errorf("PEP 768 remote execution in pid %d: %w", pid, err))
		}
	}
	pr.LoadMs = ms(time.Since(start))
	opts.Log.Debug("injected", "pid", pid, "method", pr.Method, "tid", pr.Tid, "syscall", pr.Syscall, "load_ms", pr.LoadMs)
	return pr, nil
}

func pyhookFor(t target, opts Options) string {
	if t.python == "" {
		return ""
	}
	return opts.PyHook
}

func withLog(err error, st *Staging) error {
	if l := strings.TrimSpace(st.ReadLog(2048)); l != "" {
		return fmt.Errorf("%w; injection log: %s", err, strings.ReplaceAll(l, "\n", " | "))
	}
	return err
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeScript writes D/inject.py, the script PEP 768 runs (docs/injection.md §2): it loads the
// agent, then starts the hook; errors go to the injection log, never into the target.
func (s *Staging) writeScript() (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by profilemate-trace attach --inject=remote-exec (docs/injection.md)\n")
	fmt.Fprintf(&b, "def _pm_inject():\n")
	fmt.Fprintf(&b, "    import ctypes, sys, traceback\n")
	fmt.Fprintf(&b, "    try:\n")
	fmt.Fprintf(&b, "        rc = ctypes.CDLL(%q).pm_inject_start(%q.encode())\n", s.Agent, s.Conf)
	fmt.Fprintf(&b, "        if rc < 0:\n")
	fmt.Fprintf(&b, "            raise RuntimeError('pm_inject_start returned %%d' %% rc)\n")
	if s.PyHook != "" {
		fmt.Fprintf(&b, "        sys.path.insert(0, %q)\n", s.PyHook)
		fmt.Fprintf(&b, "        from profilemate_trace import late\n")
		fmt.Fprintf(&b, "        late.start(%q)\n", s.Conf)
	}
	fmt.Fprintf(&b, "    except BaseException:\n")
	fmt.Fprintf(&b, "        with open(%q, 'a') as f:\n", s.Log)
	fmt.Fprintf(&b, "            f.write('inject.py: ' + traceback.format_exc().replace('\\n', ' | ') + '\\n')\n")
	fmt.Fprintf(&b, "_pm_inject()\ndel _pm_inject\n")
	if err := s.writeFile("inject.py", []byte(b.String())); err != nil {
		return "", err
	}
	return s.Dir + "/inject.py", nil
}

// Detach writes control_enable=3 to every ring the injection created, waits up to wait for the
// producers' acknowledgements, then removes the staging directories. Processes that exited are
// only cleaned up after.
func (inj *Injection) Detach(wait time.Duration) error {
	if inj == nil {
		return nil
	}
	if wait <= 0 {
		wait = DefaultDetachWait
	}
	type pending struct {
		p   *Process
		r   *ring.Reader
		src string
		seq uint32
		n   int // requests re-issued
	}
	var waiting []pending
	// A producer loaded just now may not have made its ring yet (Detach right after a failed
	// injection of another process): wait for it within the same bound as the acks.
	deadline := time.Now().Add(wait)
	for _, p := range inj.Injected() {
		seen := map[uint64]bool{}
		ours := 0
		for {
			found, err := ring.Find(p.Pid)
			if err != nil || processGone(p.Pid) {
				p.Detach = "process gone"
				break
			}
			for _, f := range found {
				var st syscall.Stat_t
				if syscall.Stat(f.Path, &st) != nil || seen[st.Ino] {
					continue // one ring may sit behind several descriptors
				}
				r, err := ring.Open(f.Path)
				if err != nil {
					continue // not initialised yet (ring.ErrNotReady): next round
				}
				seen[st.Ino] = true
				h := r.Header()
				// Ours: an agent started by pm_inject_start (late_start_ns set; the late flag alone
				// also marks a preloaded agent armed late), or any ring made after we began.
				if h.LateStartNs == 0 && h.CreatedNs < p.startedNs {
					r.Close() // a ring from before the injection: not ours to detach
					continue
				}
				seq := r.Detach()
				afterDetachRequest(r)
				waiting = append(waiting, pending{p, r, f.Source, seq, 0})
				ours++
			}
			if ours > 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if ours == 0 && p.Detach == "" {
			p.Detach = "no injected ring found"
		}
	}
	reissued := map[*Process][]string{}
	for i := range waiting {
		w := &waiting[i]
		for {
			h := w.r.Header()
			if h.ControlAck == w.seq {
				if w.src == ring.SourceCUPTI.String() && h.ProducerState != ring.StateDetached {
					w.p.Detach = joinMsg(w.p.Detach, fmt.Sprintf("%s ring: acknowledged but producer_state %d, not detached", w.src, h.ProducerState))
				}
				break
			}
			if w.src == ring.SourceCUPTI.String() && h.ProducerState == ring.StateDetached {
				break // detached on a later request of ours, or on its own (orphaned)
			}
			// Another writer of the control word (a second tracer attached to the same process)
			// wrote after our request and before the producer read it: the producer only sees
			// the last write, so our request is lost. Ask again, a few times.
			if h.ControlSeq != w.seq && h.ControlEnable != ring.ControlDetach && w.n < 3 {
				w.n++
				w.seq = w.r.Detach()
				reissued[w.p] = append(reissued[w.p], fmt.Sprintf("%s (overwritten with enable %d)", w.src, h.ControlEnable))
				continue
			}
			if time.Now().After(deadline) || processGone(w.p.Pid) {
				msg := fmt.Sprintf("%s ring: no acknowledgement of control_seq %d within %v (control_ack %d, producer_state %d)", w.src, w.seq, wait, h.ControlAck, h.ProducerState)
				if processGone(w.p.Pid) {
					msg = w.src + " ring: process exited"
				}
				w.p.Detach = joinMsg(w.p.Detach, msg)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		w.r.Close()
	}
	inj.logs = inj.readLogs()
	var errs []error
	removed := true
	for _, p := range inj.Injected() {
		if p.Detach == "" {
			p.Detach = "acknowledged"
			if r := reissued[p]; len(r) > 0 {
				p.Detach += "; request re-issued for " + strings.Join(r, ", ")
			}
		}
	}
	for _, p := range inj.Processes {
		if err := p.stage.Remove(); err != nil {
			errs = append(errs, err)
			removed = false
		}
	}
	inj.StagingRemoved = removed
	return errors.Join(errs...)
}

// afterDetachRequest runs right after each detach request is written (tests: a concurrent writer).
var afterDetachRequest = func(*ring.Reader) {}

// FirstEnableStall returns how long the first enable of the injected agent in pid blocked its
// thread (the agent publishes it in its ring header, first_enable_ns), once it is known.
func FirstEnableStall(pid int) (time.Duration, bool) {
	found, err := ring.Find(pid)
	if err != nil {
		return 0, false
	}
	for _, f := range found {
		if f.Source != ring.SourceCUPTI.String() {
			continue
		}
		r, err := ring.Open(f.Path)
		if err != nil {
			continue
		}
		h := r.Header()
		r.Close()
		if h.FirstEnableNs > 0 {
			return time.Duration(h.FirstEnableNs), true
		}
	}
	return 0, false
}

func joinMsg(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
