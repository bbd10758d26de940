//go:build linux

// Package tracer loads the eBPF programs of bpf/, attaches them to a process tree and turns
// their samples into framed records (internal/record, types 128-191) per process.
//
// Life cycle: NewSpec (deterministic) → New (load into the kernel, attach the process-tree
// tracepoints) → Attach(pid) (CPython discovery through /proc, libcuda uprobes) → Run (read the
// ring buffer, name code objects, follow children) → Close (detach everything, reverse order).
package tracer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/profilemate/profilemate-trace/bpf"
	"github.com/profilemate/profilemate-trace/internal/pyproc"
	"github.com/profilemate/profilemate-trace/internal/record"
)

// Errors the CLI maps to messages and exit codes.
var (
	ErrPermission = errors.New("eBPF tracing needs root, or CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE")
	ErrNoBTF      = errors.New("kernel has no BTF (/sys/kernel/btf/vmlinux missing; needs CONFIG_DEBUG_INFO_BTF=y, Linux >= 5.8)")
	ErrNoLibcuda  = errors.New("no libcuda.so mapped in the process tree")
	ErrClosed     = errors.New("tracer closed")
)

// Sink receives framed records (one record per call) for the process pid (host pid namespace;
// 0 = records about the whole tracer, e.g. global drop counters). The first records of each
// pid are the ebpf_phase_def table. Calls are serialised (never concurrent) and the record
// bytes are only valid during the call.
type Sink func(pid int, rec []byte) error

// Tracer owns the loaded BPF objects, the ring-buffer reader and all links.
type Tracer struct {
	cfg   Config
	log   *slog.Logger
	multi bool

	coll   *ebpf.Collection
	events *ebpf.Map
	pids   *ebpf.Map
	pyconf *ebpf.Map
	tstate *ebpf.Map
	codes  *ebpf.Map
	gen    *ebpf.Map // pm_gen: bumped after every change to codes (invalidates the BPF walk memory)
	genN   uint32
	count  *ebpf.Map
	drops  *ebpf.Map
	tps    []link.Link
	rd     *ringbuf.Reader

	mu     sync.Mutex
	procs  map[int]*proc
	wide   map[string][]link.Link // SystemWide: links per libcuda host path
	closed bool
	emitMu sync.Mutex   // serialises sink calls
	headed map[int]bool // streams that got their ebpf_phase_def records (under emitMu)

	stats struct {
		records, launches, syncs, codesSeen, codesNamed, sinkErrors, readerErrors atomic.Uint64
	}
}

// proc is one traced process.
type proc struct {
	pid        int
	ppid       int
	space      uint32 // code-object space (pm_pyconf.space): own pid, or the parent's after fork
	py         *pyproc.Process
	pyErr      error
	libcuda    string // as the process sees it
	links      []link.Link
	names      map[uint64]bool   // code objects already named in the stream
	phaseCodes map[uint64]uint16 // code objects marked as phases
	exited     bool
	attached   bool // uprobes in place (or covered by a system-wide link)
	pyReady    bool
	tries      int
	born       time.Time // when the process started (from /proc; when the tracer saw it if that failed)
	pyAt       time.Time // when CPython was found
	unnamed    []uint64  // phase code objects found by a scan, not yet named in the stream
	rescans    int
}

// youngFor is how long after a process starts its thread list and gilstate key are re-read on
// every poll and its memory rescanned for phase functions (rescanAfter). A process that is older
// when the tracer finds it (attach to a running server) gets one scan: rescanning a large server
// reads gigabytes of its memory each time, and lazy discovery (ebpf_code_seen) covers what the
// scan missed.
var youngFor = 5 * time.Second

// New checks privileges and kernel support, loads the programs and attaches the process-tree
// tracepoints. Close releases everything.
func New(cfg Config) (_ *Tracer, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := checkPrivileges(); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, ErrNoBTF
	}
	_ = rlimit.RemoveMemlock() // needed before 5.11 only; harmless after
	t := &Tracer{cfg: cfg, log: cfg.Logger, procs: map[int]*proc{}, wide: map[string][]link.Link{}, headed: map[int]bool{}}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	t.multi = !cfg.NoUprobeMulti && features.HaveBPFLinkUprobeMulti() == nil
	spec, err := NewSpec(cfg, t.multi)
	if err != nil {
		return nil, err
	}
	t.coll, err = ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("loading BPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("loading BPF programs: %w", err)
	}
	m := t.coll.Maps
	t.events, t.pids, t.pyconf, t.tstate = m["pm_events"], m["pm_pids"], m["pm_pyconfs"], m["pm_tstates"]
	t.codes, t.count, t.drops, t.gen = m["pm_codes"], m["pm_counters"], m["pm_drops"], m["pm_gen"]
	for _, name := range []string{progFork, progExec, progExit} {
		l, err := link.AttachTracing(link.TracingOptions{Program: t.coll.Programs[name]})
		if err != nil {
			return nil, fmt.Errorf("attaching %s: %w", name, err)
		}
		t.tps = append(t.tps, l)
	}
	t.rd, err = ringbuf.NewReader(t.events)
	if err != nil {
		return nil, fmt.Errorf("opening ring buffer: %w", err)
	}
	return t, nil
}

// UprobeMulti reports whether libcuda probes use uprobe_multi links.
func (t *Tracer) UprobeMulti() bool { return t.multi }

// Close detaches every probe and releases the BPF objects, in reverse order of creation. It is
// nil-safe and idempotent and returns the first error.
func (t *Tracer) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	pids := make([]int, 0, len(t.procs))
	for pid := range t.procs {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		p := t.procs[pid]
		for i := len(p.links) - 1; i >= 0; i-- {
			keep(p.links[i].Close())
		}
		p.links = nil
		keep(p.py.Close())
	}
	for _, ls := range t.wide {
		for i := len(ls) - 1; i >= 0; i-- {
			keep(ls[i].Close())
		}
	}
	t.wide = nil
	if t.rd != nil {
		keep(t.rd.Close())
	}
	for i := len(t.tps) - 1; i >= 0; i-- {
		keep(t.tps[i].Close())
	}
	t.tps = nil
	if t.coll != nil {
		t.coll.Close()
	}
	return first
}

func checkPrivileges() error {
	if os.Geteuid() == 0 {
		return nil
	}
	caps, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrPermission, err)
	}
	const capSysPtrace, capSysAdmin, capPerfmon, capBPF = 19, 21, 38, 39
	has := func(c uint) bool { return caps&(1<<c) != 0 }
	if (has(capSysAdmin) || (has(capBPF) && has(capPerfmon))) && has(capSysPtrace) {
		return nil
	}
	return ErrPermission
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff in /proc/self/status")
}

// Attach traces pid and its descendants; children that appear later are followed. CPython is
// discovered in each process (phases need it; a process without Python is traced without
// phases), and libcuda probes are attached in each process that maps libcuda (or later, when
// it does).
func (t *Tracer) Attach(pid int) error {
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return fmt.Errorf("attach: pid %d: %w", pid, pyproc.ErrNoProcess)
	}
	tree := append([]int{pid}, descendants(pid)...)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	anyCuda := false
	for _, p := range tree {
		pr := t.addProc(p, 0)
		t.tryAttach(pr)
		if pr.libcuda != "" {
			anyCuda = true
		}
	}
	root := t.procs[pid]
	if root.pyErr != nil && errors.Is(root.pyErr, pyproc.ErrNoProcess) {
		return fmt.Errorf("attach: pid %d: %w", pid, root.pyErr)
	}
	if !anyCuda && !t.cfg.WaitForLibcuda {
		return fmt.Errorf("attach: pid %d (%d processes): %w", pid, len(tree), ErrNoLibcuda)
	}
	return nil
}

// Detach stops tracing pid (not its children) and removes its probes and map entries.
func (t *Tracer) Detach(pid int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.procs[pid]
	if !ok {
		return nil
	}
	err := t.dropProc(p)
	delete(t.procs, pid)
	return err
}

func (t *Tracer) addProc(pid, ppid int) *proc {
	if p, ok := t.procs[pid]; ok {
		return p
	}
	p := &proc{pid: pid, ppid: ppid, names: map[uint64]bool{}, phaseCodes: map[uint64]uint16{}, born: time.Now()}
	if age, err := pyproc.Age(pid); err == nil {
		p.born = p.born.Add(-age)
	}
	t.procs[pid] = p
	one := uint32(1)
	if err := t.pids.Update(uint32(pid), one, ebpf.UpdateAny); err != nil {
		t.log.Warn("tracing pid", "pid", pid, "error", err)
	}
	return p
}

func (t *Tracer) dropProc(p *proc) error {
	var first error
	for i := len(p.links) - 1; i >= 0; i-- {
		if err := p.links[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	p.links = nil
	p.py.Close()
	p.py = nil
	key := uint32(p.pid)
	t.pids.Delete(key)
	t.pyconf.Delete(key)
	old := p.space
	p.space = 0
	t.purgeMaps(uint32(p.pid), old)
	return first
}

// purgeMaps deletes the per-thread entries of a process and the code entries of a code space
// that no other traced process uses any more.
func (t *Tracer) purgeMaps(pid, space uint32) {
	var tk bpf.TstateKey
	var tv uint64
	var tdel []bpf.TstateKey
	it := t.tstate.Iterate()
	for it.Next(&tk, &tv) {
		if tk.Pid == pid {
			tdel = append(tdel, tk)
		}
	}
	for _, k := range tdel {
		t.tstate.Delete(k)
	}
	if space == 0 {
		return
	}
	for _, o := range t.procs {
		if o.space == space && o.pid != int(pid) && !o.exited {
			return
		}
	}
	var ck bpf.CodeKey
	var cv bpf.CodeVal
	var cdel []bpf.CodeKey
	ci := t.codes.Iterate()
	for ci.Next(&ck, &cv) {
		if ck.Space == space {
			cdel = append(cdel, ck)
		}
	}
	for _, k := range cdel {
		t.codes.Delete(k)
	}
	if len(cdel) > 0 {
		t.codesChanged()
	}
}

// codesChanged tells the BPF walks that pm_codes changed: what the walks on each CPU remember
// (pm_chains) is tagged with the generation and stops counting. Called with t.mu held,
// after the change, so a walk that sees the new generation also sees the new codes.
func (t *Tracer) codesChanged() {
	t.genN++
	if err := t.gen.Update(uint32(0), t.genN, ebpf.UpdateAny); err != nil {
		t.log.Warn("bumping the code generation", "error", err)
	}
}

// tryAttach completes what is missing for p: CPython discovery, then libcuda probes. Called
// with t.mu held.
func (t *Tracer) tryAttach(p *proc) {
	if p.exited {
		return
	}
	p.tries++
	if !p.pyReady {
		t.setupPython(p)
	}
	if p.attached {
		return
	}
	maps, err := pyproc.ReadMaps(p.pid)
	if err != nil {
		if errors.Is(err, pyproc.ErrNoProcess) {
			p.exited = true
			p.pyErr = err
		}
		return
	}
	lib := pyproc.FindLibrary(maps, "libcuda.so")
	if lib == "" {
		return
	}
	p.libcuda = lib
	if err := t.attachCuda(p); err != nil {
		t.log.Warn("attaching libcuda probes", "pid", p.pid, "libcuda", lib, "error", err)
		return
	}
	p.attached = true
}

func (t *Tracer) setupPython(p *proc) {
	py, err := pyproc.Open(p.pid)
	if err != nil {
		p.pyErr = err
		return
	}
	threads, err := py.Validate()
	if err != nil {
		py.Close()
		p.pyErr = err
		return
	}
	if err := CheckPyConf(PyConf(py)); err != nil {
		py.Close()
		p.pyErr = fmt.Errorf("CPython %s layout: %w", py.VersionString(), err)
		return
	}
	if _, err := py.GilstateKey(threads); err != nil {
		t.log.Debug("gilstate key not usable; thread map only", "pid", p.pid, "error", err)
	}
	p.py, p.pyErr, p.pyReady = py, nil, true
	t.fillThreads(p, threads)
	p.pyAt = time.Now()
	found := 0
	if p.space == 0 {
		// A new image: find the phase functions that already exist (attach to a running
		// process). A forked child keeps its parent's space, already filled.
		p.space = uint32(p.pid)
		found = t.scanPhases(p)
	}
	conf := PyConf(py)
	conf.Space = p.space
	if err := t.pyconf.Update(uint32(p.pid), conf, ebpf.UpdateAny); err != nil {
		t.log.Warn("writing CPython config", "pid", p.pid, "error", err)
	}
	t.log.Debug("CPython attached", "pid", p.pid, "version", py.VersionString(), "path", py.Path,
		"threads", len(threads), "gilstate_key", py.GilKey, "phase_codes", found)
}

// rescanAfter are the ages (since CPython was found) at which a young process's memory is
// scanned again for phase functions: CPython is often found while the process still imports
// its modules; lazy discovery (ebpf_code_seen) covers the rest one round trip late.
var rescanAfter = []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second}

func (t *Tracer) maybeRescan(p *proc) {
	if p.rescans >= len(rescanAfter) || time.Since(p.pyAt) < rescanAfter[p.rescans] || p.space != uint32(p.pid) {
		return
	}
	p.rescans++
	t.scanPhases(p)
}

// scanPhases finds existing phase functions in p's memory and marks them. t.mu held.
func (t *Tracer) scanPhases(p *proc) int {
	names := t.cfg.Phases.coNames()
	hasQ := p.py.Layout.CodeQualname != pyproc.None
	codes, err := p.py.ScanCodes(t.cfg.ScanBytes, func(n string) bool { return names[n] }, func(c pyproc.Code) bool {
		return t.cfg.Phases.Match(c.Qualname, c.Filename, hasQ) != 0
	})
	if err != nil {
		t.log.Warn("code scan incomplete", "pid", p.pid, "error", err)
	}
	marks := map[uint64]uint16{}
	for _, c := range codes {
		if _, ok := p.phaseCodes[c.Addr]; !ok {
			marks[c.Addr] = t.cfg.Phases.Match(c.Qualname, c.Filename, hasQ)
			p.unnamed = append(p.unnamed, c.Addr) // named in the stream by Run (ebpf_code_info)
		}
	}
	t.markPhases(p, marks)
	return len(codes)
}

// refreshThreads re-reads the thread list and the gilstate key of p (CPython re-creates the
// key in a forked child, PyOS_AfterFork_Child) and updates the BPF maps. t.mu held.
func (t *Tracer) refreshThreads(p *proc) {
	threads, err := p.py.Threads()
	if err != nil {
		return
	}
	t.fillThreads(p, threads)
	old := p.py.GilKey
	if k, err := p.py.GilstateKey(threads); err == nil && k != old {
		conf := PyConf(p.py)
		conf.Space = p.space
		t.pyconf.Update(uint32(p.pid), conf, ebpf.UpdateAny)
		t.log.Debug("gilstate key changed", "pid", p.pid, "old", old, "new", k)
	}
}

func (t *Tracer) markPhase(p *proc, code uint64, phase uint16) {
	t.markPhases(p, map[uint64]uint16{code: phase})
}

// markPhases marks code objects of p as phases in pm_codes, then bumps the code generation once.
func (t *Tracer) markPhases(p *proc, marks map[uint64]uint16) {
	for code, phase := range marks {
		p.phaseCodes[code] = phase
		k := bpf.CodeKey{Space: p.space, Code: code}
		if err := t.codes.Update(k, bpf.CodeVal{Phase: phase}, ebpf.UpdateAny); err != nil {
			t.log.Warn("marking phase code", "pid", p.pid, "error", err)
		}
	}
	if len(marks) > 0 {
		t.codesChanged()
	}
}

func (t *Tracer) fillThreads(p *proc, threads []pyproc.Thread) {
	for _, th := range threads {
		if th.ThreadID == 0 {
			continue
		}
		k := bpf.TstateKey{Pid: uint32(p.pid), Fsbase: th.ThreadID}
		t.tstate.Update(k, th.Tstate, ebpf.UpdateAny)
	}
}

func (t *Tracer) attachCuda(p *proc) error {
	host := pyproc.HostPath(p.pid, p.libcuda)
	if t.cfg.SystemWide {
		real, err := os.Stat(host)
		if err != nil {
			return err
		}
		st, ok := real.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("stat %s: no inode", host)
		}
		key := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
		if _, ok := t.wide[key]; ok {
			return nil
		}
		ls, err := t.attachFile(host, 0)
		if err != nil {
			return err
		}
		t.wide[key] = ls
		return nil
	}
	ls, err := t.attachFile(host, uint32(p.pid))
	if err != nil {
		return err
	}
	p.links = ls
	return nil
}

// attachFile attaches the planned probes to one libcuda file for pid (0: every process).
func (t *Tracer) attachFile(path string, pid uint32) (_ []link.Link, err error) {
	exported, err := ExportedSymbols(path)
	if err != nil {
		return nil, err
	}
	plan := Plan(exported)
	if len(plan) == 0 {
		return nil, fmt.Errorf("%s exports none of the probed CUDA driver entry points", path)
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return nil, err
	}
	var links []link.Link
	defer func() {
		if err != nil {
			for i := len(links) - 1; i >= 0; i-- {
				links[i].Close()
			}
		}
	}()
	if t.multi {
		for _, ret := range []bool{false, true} {
			var syms []string
			var cookies []uint64
			for _, pr := range plan {
				if pr.Return == ret {
					syms = append(syms, pr.API.Symbol)
					cookies = append(cookies, pr.API.Cookie())
				}
			}
			if len(syms) == 0 {
				continue
			}
			opts := &link.UprobeMultiOptions{PID: pid, Cookies: cookies}
			var l link.Link
			if ret {
				l, err = ex.UretprobeMulti(syms, t.coll.Programs[progReturnMulti], opts)
			} else {
				l, err = ex.UprobeMulti(syms, t.coll.Programs[progEntryMulti], opts)
			}
			if err != nil {
				return nil, fmt.Errorf("uprobe_multi on %s: %w", path, err)
			}
			links = append(links, l)
		}
		return links, nil
	}
	for _, pr := range plan {
		opts := &link.UprobeOptions{PID: int(pid), Cookie: pr.API.Cookie()}
		if pid == 0 {
			opts.PID = -1
		}
		var l link.Link
		if pr.Return {
			l, err = ex.Uretprobe(pr.API.Symbol, t.coll.Programs[progReturn], opts)
		} else {
			l, err = ex.Uprobe(pr.API.Symbol, t.coll.Programs[progEntry], opts)
		}
		if err != nil {
			return nil, fmt.Errorf("uprobe %s on %s: %w", pr.API.Symbol, path, err)
		}
		links = append(links, l)
	}
	return links, nil
}

// descendants lists the live descendants of pid (from /proc/*/stat).
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := parentOf(c); pp > 0 {
			children[pp] = append(children[pp], c)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	sort.Ints(out)
	return out
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// Run reads the ring buffer until ctx ends, hands each record to sink, names code objects,
// follows new processes and retries incomplete attaches. On return it appends counter and
// drop snapshots to every traced process's stream.
func (t *Tracer) Run(ctx context.Context, sink Sink) error {
	if t == nil || t.rd == nil {
		return ErrClosed
	}
	done := make(chan struct{})
	go func() { // periodic work: retries, counter snapshots
		ticker := time.NewTicker(DefaultPoll)
		defer ticker.Stop()
		lastSnap := time.Now()
		for tick := 0; ; tick++ {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			t.mu.Lock()
			type code struct {
				pid  int
				addr uint64
			}
			var unnamed []code
			for _, p := range t.procs {
				for _, a := range p.unnamed {
					unnamed = append(unnamed, code{p.pid, a})
				}
				p.unnamed = nil
				// Retry what is missing every poll for the first minute, then every second
				// (a vLLM worker may initialise CUDA minutes after it starts).
				if !p.exited && (!p.attached || !p.pyReady) && (p.tries < 600 || tick%10 == 0) {
					t.tryAttach(p)
				} else if !p.exited && p.py != nil && time.Since(p.born) < youngFor {
					t.refreshThreads(p) // a young child may still be re-initialising after fork
					t.maybeRescan(p)    // and still importing its phase functions
				}
			}
			t.mu.Unlock()
			for _, c := range unnamed {
				t.nameCode(c.pid, c.addr, 1, sink)
			}
			if t.cfg.CounterInterval > 0 && time.Since(lastSnap) >= t.cfg.CounterInterval {
				lastSnap = time.Now()
				t.snapshot(sink)
			}
		}
	}()
	defer close(done)
	var rec ringbuf.Record
	final := false
	for {
		if !final && ctx.Err() != nil {
			final = true
			t.rd.SetDeadline(time.Now()) // drain what is there, then stop
		} else if !final {
			t.rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		}
		err := t.rd.ReadInto(&rec)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if final {
					break
				}
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return ErrClosed
			}
			t.stats.readerErrors.Add(1)
			continue
		}
		t.handle(rec.RawSample, sink)
	}
	t.snapshot(sink)
	return nil
}

func (t *Tracer) emit(sink Sink, pid int, rec []byte) {
	t.emitMu.Lock()
	defer t.emitMu.Unlock()
	if !t.headed[pid] { // each stream starts with the phase table
		t.headed[pid] = true
		for _, d := range t.PhaseDefs() {
			if err := sink(pid, d); err != nil {
				t.stats.sinkErrors.Add(1)
			}
		}
	}
	if err := sink(pid, rec); err != nil {
		t.stats.sinkErrors.Add(1)
	}
}

func (t *Tracer) handle(b []byte, sink Sink) {
	typ, size, err := record.Peek(b)
	if err != nil {
		t.stats.readerErrors.Add(1)
		return
	}
	b = b[:size]
	t.stats.records.Add(1)
	switch typ {
	case record.TypeEbpfLaunch:
		t.stats.launches.Add(1)
		t.emit(sink, int(binary.LittleEndian.Uint32(b[launchPidOff:])), b)
	case record.TypeEbpfSync:
		t.stats.syncs.Add(1)
		t.emit(sink, int(binary.LittleEndian.Uint32(b[syncPidOff:])), b)
	case record.TypeEbpfCodeSeen:
		r, err := record.DecodeEbpfCodeSeen(b)
		if err != nil {
			return
		}
		t.stats.codesSeen.Add(1)
		t.emit(sink, int(r.PID), b)
		t.nameCode(int(r.PID), r.Code, 2, sink)
	case record.TypeEbpfTstateMiss:
		r, err := record.DecodeEbpfTstateMiss(b)
		if err != nil {
			return
		}
		t.emit(sink, int(r.PID), b)
		t.mu.Lock()
		if p := t.procs[int(r.PID)]; p != nil && p.py != nil {
			t.refreshThreads(p)
		}
		t.mu.Unlock()
	case record.TypeEbpfProc:
		r, err := record.DecodeEbpfProc(b)
		if err != nil {
			return
		}
		t.emit(sink, int(r.PID), b)
		t.procEvent(r)
	default:
		t.emit(sink, 0, b)
	}
}

func (t *Tracer) procEvent(r record.EbpfProc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	pid := int(r.PID)
	switch r.Event {
	case 1: // fork: same image as the parent until exec
		p := t.addProc(pid, int(r.Ppid))
		if parent := t.procs[int(r.Ppid)]; parent != nil && parent.space != 0 {
			// BPF already gave the child the parent's pm_pyconf, space included: the parent's
			// phase codes apply from the child's first call.
			p.space = parent.space
			for code, ph := range parent.phaseCodes {
				p.phaseCodes[code] = ph
			}
		}
		t.tryAttach(p)
	case 2: // exec: a new image
		p := t.addProc(pid, 0)
		for i := len(p.links) - 1; i >= 0; i-- {
			p.links[i].Close()
		}
		p.links, p.attached, p.libcuda, p.tries = nil, false, "", 0
		p.py.Close()
		p.py, p.pyReady, p.rescans = nil, false, 0
		p.names, p.phaseCodes = map[uint64]bool{}, map[uint64]uint16{}
		old := p.space
		p.space = 0
		t.purgeMaps(uint32(pid), old)
		t.tryAttach(p)
	case 3:
		if p := t.procs[pid]; p != nil {
			p.exited = true
		}
	}
}

// nameCode resolves a code object's names, upgrades it to a phase if it is one, and writes an
// ebpf_code_info record.
func (t *Tracer) nameCode(pid int, code uint64, flags uint16, sink Sink) {
	t.mu.Lock()
	p := t.procs[pid]
	if p == nil || p.names[code] {
		t.mu.Unlock()
		return
	}
	p.names[code] = true
	py := p.py
	if py == nil {
		t.mu.Unlock()
		return
	}
	c, err := py.ReadCode(code)
	var phase uint16
	if err != nil {
		flags |= 4
	} else {
		phase = t.cfg.Phases.Match(c.Qualname, c.Filename, py.Layout.CodeQualname != pyproc.None)
		if phase != 0 {
			t.markPhase(p, code, phase)
		}
	}
	t.mu.Unlock()
	t.stats.codesNamed.Add(1)
	info := record.EbpfCodeInfo{Code: code, PID: uint32(pid), Phase: phase, Flags: flags,
		Firstlineno: c.FirstLineno, Name: []byte(c.Qualname + "\t" + c.Filename)}
	t.emit(sink, pid, record.AppendEbpfCodeInfo(nil, &info))
}

// PhaseDefs returns the ebpf_phase_def records of the phase table (for the head of each stream).
func (t *Tracer) PhaseDefs() [][]byte {
	var out [][]byte
	for _, r := range t.cfg.Phases.Rules {
		id := t.cfg.Phases.ids[r.Phase]
		d := record.EbpfPhaseDef{Phase: id, Name: []byte(r.Phase + "\t" + r.Qualname + "\t" + r.FileSuffix)}
		out = append(out, record.AppendEbpfPhaseDef(nil, &d))
	}
	return out
}

// Counter is one (process, phase, API) counter summed over CPUs.
type Counter struct {
	Pid   int
	Phase uint16
	API   uint16
	Count uint64
	CPUNs uint64
	Bytes uint64
}

// Counters reads the in-kernel counters.
func (t *Tracer) Counters() []Counter {
	var out []Counter
	var k bpf.CounterKey
	var vs []bpf.CounterVal
	it := t.count.Iterate()
	for it.Next(&k, &vs) {
		c := Counter{Pid: int(k.Pid), Phase: k.Phase, API: k.Api}
		for _, v := range vs {
			c.Count += v.Count
			c.CPUNs += v.CpuNs
			c.Bytes += v.Bytes
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Pid != b.Pid {
			return a.Pid < b.Pid
		}
		if a.Phase != b.Phase {
			return a.Phase < b.Phase
		}
		return a.API < b.API
	})
	return out
}

// Drops returns the BPF-side loss counters by reason (bpf.Drop*).
func (t *Tracer) Drops() map[uint32]uint64 {
	out := map[uint32]uint64{}
	for r := uint32(1); r < bpf.DropMax; r++ {
		var vs []uint64
		if err := t.drops.Lookup(r, &vs); err != nil {
			continue
		}
		var s uint64
		for _, v := range vs {
			s += v
		}
		if s > 0 {
			out[r] = s
		}
	}
	return out
}

func (t *Tracer) snapshot(sink Sink) {
	now := monotonicNs()
	for _, c := range t.Counters() {
		r := record.EbpfPhaseCounter{TsNS: now, Count: c.Count, CPUNS: c.CPUNs, Bytes: c.Bytes,
			PID: uint32(c.Pid), Phase: c.Phase, API: c.API}
		t.emit(sink, c.Pid, record.AppendEbpfPhaseCounter(nil, &r))
	}
	for reason, n := range t.Drops() {
		r := record.EbpfDrops{TsNS: now, Count: n, Reason: reason}
		t.emit(sink, 0, record.AppendEbpfDrops(nil, &r))
	}
	if n := t.stats.sinkErrors.Load(); n > 0 {
		r := record.EbpfDrops{TsNS: now, Count: n, Reason: 6}
		t.emit(sink, 0, record.AppendEbpfDrops(nil, &r))
	}
}

// Stats summarises what the tracer did.
type Stats struct {
	Records, Launches, Syncs, CodesSeen, CodesNamed, SinkErrors, ReaderErrors uint64
	Drops                                                                     map[uint32]uint64
	Procs                                                                     []ProcStatus
	UprobeMulti                                                               bool
}

// ProcStatus is the attach state of one process.
type ProcStatus struct {
	Pid, Ppid  int
	Python     string // version, "" when none
	PythonErr  string // why phases are unavailable
	Libcuda    string
	Probed     bool
	PhaseCodes int
	Exited     bool
}

// Stats returns counters and per-process state.
func (t *Tracer) Stats() Stats {
	s := Stats{Records: t.stats.records.Load(), Launches: t.stats.launches.Load(), Syncs: t.stats.syncs.Load(),
		CodesSeen: t.stats.codesSeen.Load(), CodesNamed: t.stats.codesNamed.Load(),
		SinkErrors: t.stats.sinkErrors.Load(), ReaderErrors: t.stats.readerErrors.Load(), UprobeMulti: t.multi}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return s
	}
	s.Drops = t.Drops()
	for _, p := range t.procs {
		ps := ProcStatus{Pid: p.pid, Ppid: p.ppid, Libcuda: p.libcuda, Probed: p.attached, PhaseCodes: len(p.phaseCodes), Exited: p.exited}
		if p.py != nil {
			ps.Python = p.py.VersionString()
		}
		if p.pyErr != nil {
			ps.PythonErr = p.pyErr.Error()
		}
		s.Procs = append(s.Procs, ps)
	}
	sort.Slice(s.Procs, func(i, j int) bool { return s.Procs[i].Pid < s.Procs[j].Pid })
	return s
}

func monotonicNs() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// Offsets of the pid field in the two hot records, from the generated layout.
var launchPidOff, syncPidOff = fieldOffset(record.TypeEbpfLaunch, "pid"), fieldOffset(record.TypeEbpfSync, "pid")

func fieldOffset(t record.Type, name string) int {
	for _, f := range record.Specs[t].Fields {
		if f.Name == name {
			return f.Offset
		}
	}
	panic(fmt.Sprintf("record type %d has no field %q", t, name))
}
