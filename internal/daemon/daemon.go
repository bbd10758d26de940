package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/internal/capture"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// Daemon is one node daemon. Create with New, then Run.
type Daemon struct {
	cfg   Config
	m     *metrics
	disc  *discovery
	store *store

	// AttachFunc runs one capture; capture.Attach unless a test replaces it.
	attach func(context.Context, capture.AttachConfig) (*capture.Result, error)

	mu        sync.Mutex
	active    map[string]*running // by capture id
	closing   bool
	wg        sync.WaitGroup
	capCtx    context.Context
	capStop   context.CancelFunc
	started   time.Time
	stoppedAt atomic.Pointer[time.Time]
}

// New validates cfg, opens the bundle directory and prepares discovery.
func New(cfg Config) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := openStore(cfg.BundleDir)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	d := &Daemon{cfg: cfg, m: m, disc: newDiscovery(&cfg, m), store: st, attach: capture.Attach,
		active: map[string]*running{}, started: time.Now()}
	d.capCtx, d.capStop = context.WithCancel(context.Background())
	st.enforce(cfg.RetainSize, cfg.RetainAge, time.Now(), m)
	return d, nil
}

// running is a capture in progress.
type running struct {
	root    int
	cancel  context.CancelFunc
	stopped atomic.Pointer[time.Time] // set by Stop
}

// Request asks for captures of one process tree (Pid) or of every vLLM tree matching a
// selector (All, or Selector). Exactly one of Pid, Selector, All is set.
type Request struct {
	Pid         int
	Selector    Selector
	All         bool
	Duration    time.Duration
	Detail      ring.Detail
	SampleEvery uint32
	Label       string
	Trigger     string
}

// Selector matches process trees by their root's pod and names. Empty fields match all.
type Selector struct {
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	PodUID    string `json:"pod_uid,omitempty"`
	Container string `json:"container,omitempty"` // container id prefix
	Comm      string `json:"comm,omitempty"`
}

func (s Selector) empty() bool { return s == Selector{} }

func (s Selector) matches(p *Process) bool {
	return (s.Namespace == "" || s.Namespace == p.Namespace) && (s.Pod == "" || s.Pod == p.PodName) &&
		(s.PodUID == "" || s.PodUID == p.PodUID) && (s.Container == "" || strings.HasPrefix(p.ContainerID, s.Container)) &&
		(s.Comm == "" || s.Comm == p.Comm)
}

// APIError is an error with an HTTP status.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

func apiErr(status int, format string, args ...any) *APIError {
	return &APIError{status, fmt.Sprintf(format, args...)}
}

// Start starts the captures a request asks for and returns their index entries.
func (d *Daemon) Start(req Request) ([]Capture, error) {
	if req.Duration <= 0 {
		req.Duration = d.cfg.DefaultDuration
	}
	if req.Duration > d.cfg.MaxDuration {
		return nil, apiErr(400, "duration %s exceeds the daemon's --max-duration %s", req.Duration, d.cfg.MaxDuration)
	}
	if req.Duration < 100*time.Millisecond {
		return nil, apiErr(400, "duration %s is too short (minimum 100ms)", req.Duration)
	}
	if req.Trigger == "" {
		req.Trigger = "api"
	}
	var targets []Process
	if req.Pid != 0 {
		p, err := d.resolvePid(req.Pid)
		if err != nil {
			return nil, err
		}
		targets = []Process{p}
	} else {
		d.disc.scan()
		for _, p := range d.disc.snapshot() {
			if p.Pid == p.Root && (req.All || req.Selector.matches(&p)) {
				targets = append(targets, p)
			}
		}
		if len(targets) == 0 {
			return nil, apiErr(404, "no vLLM process tree on this node matches the selector")
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return nil, apiErr(503, "the daemon is shutting down")
	}
	if len(d.active)+len(targets) > d.cfg.MaxRunning {
		d.m.captures.WithLabelValues("refused_limit").Inc()
		return nil, apiErr(429, "%d captures are running and the limit is %d (--max-running); try again when one ends", len(d.active), d.cfg.MaxRunning)
	}
	// Refuse, before starting any, when a tree overlaps a capture in progress: two
	// collectors on one ring would interleave control words and split its records.
	tree := readTree(d.cfg.ProcRoot)
	busy := map[int]string{}
	for id, r := range d.active {
		for _, p := range tree.descendants(r.root) {
			busy[p] = id
		}
	}
	claimed := map[int]bool{}
	for _, t := range targets {
		for _, p := range tree.descendants(t.Pid) {
			if id, ok := busy[p]; ok {
				d.m.captures.WithLabelValues("refused_busy").Inc()
				return nil, apiErr(409, "pid %d is already being captured by %s (pid %d is in its process tree); wait for it to end (GET /captures/%s)", t.Pid, id, p, id)
			}
			if claimed[p] {
				return nil, apiErr(409, "the selected process trees overlap at pid %d", p)
			}
			claimed[p] = true
		}
	}
	now := time.Now()
	var out []Capture
	for _, t := range targets {
		c := &Capture{ID: newID(now), State: StateRunning, Trigger: req.Trigger, Label: req.Label, Pid: t.Pid, Comm: t.Comm,
			Namespace: t.Namespace, PodName: t.PodName, Detail: req.Detail.String(), SampleEvery: req.SampleEvery,
			DurationSec: req.Duration.Seconds(), Requested: now.UTC()}
		dir, err := d.store.create(c)
		if err != nil {
			d.m.attachFailures.WithLabelValues("bundle_dir").Inc()
			return out, apiErr(500, "creating the capture directory: %v", err)
		}
		ctx, cancel := context.WithCancel(d.capCtx)
		r := &running{root: t.Pid, cancel: cancel}
		d.active[c.ID] = r
		d.m.running.Inc()
		d.wg.Add(1)
		go d.run(ctx, r, c, dir, req)
		out = append(out, *c)
	}
	return out, nil
}

// resolvePid checks that pid exists, is a vLLM process (or in a vLLM tree) and is allowed.
func (d *Daemon) resolvePid(pid int) (Process, error) {
	if pid < 1 || pid > 1<<22 {
		return Process{}, apiErr(400, "pid %d is out of range", pid)
	}
	if _, err := os.Stat(filepath.Join(d.cfg.ProcRoot, strconv.Itoa(pid))); err != nil {
		return Process{}, apiErr(404, "pid %d: no such process on this node (the daemon sees host pids; inside a container use the host pid from GET /processes)", pid)
	}
	p, ok := d.disc.lookup(pid)
	if !ok {
		d.disc.scan()
		p, ok = d.disc.lookup(pid)
	}
	if !ok {
		if !d.cfg.AnyProcess {
			return Process{}, apiErr(422, "pid %d (%s) is not a vLLM process: no vllm in its name or command line and no profilemate ring; see GET /processes (or start the daemon with --any-process)", pid, readComm(d.cfg.ProcRoot, pid))
		}
		b, _ := os.ReadFile(filepath.Join(d.cfg.ProcRoot, strconv.Itoa(pid), "cgroup"))
		p = Process{Pid: pid, Root: pid, Comm: readComm(d.cfg.ProcRoot, pid), Pod: parseCgroup(b)}
		d.disc.resolvePods(map[int]*Process{pid: &p})
	}
	if !d.cfg.Allow.allows(&p) {
		return Process{}, apiErr(403, "pid %d is outside the daemon's allowlist (namespace %q, pod uid %q, container %q)", pid, p.Namespace, p.PodUID, short(p.ContainerID))
	}
	return p, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// run performs one capture and records its outcome.
func (d *Daemon) run(ctx context.Context, r *running, c *Capture, dir string, req Request) {
	defer d.wg.Done()
	defer r.cancel()
	log := d.cfg.Log.With("capture", c.ID, "pid", c.Pid)
	log.Info("capture started", "duration", req.Duration, "detail", c.Detail, "trigger", c.Trigger)
	lw := &lineLogger{log: log}
	cfg := capture.AttachConfig{Pid: c.Pid, Duration: req.Duration, OutputDir: dir, Detail: req.Detail,
		SampleEvery: req.SampleEvery, Mode: "daemon", Log: log, Stderr: lw}
	if d.cfg.Extra != nil {
		cfg.Extra = d.cfg.Extra
	}
	started := time.Now()
	deadline := started.Add(req.Duration)
	res, err := d.attach(ctx, cfg)
	end := time.Now()
	lw.flush()
	// The window ended at its deadline, or when the daemon was told to stop; a tree that
	// exited early has no known stop time and is not timed.
	var stopAt time.Time
	switch {
	case !end.Before(deadline):
		stopAt = deadline
	case r.stopped.Load() != nil:
		stopAt = *r.stopped.Load()
		c.Note = fmt.Sprintf("stopped on request after %.1f s of %.1f s", stopAt.Sub(started).Seconds(), req.Duration.Seconds())
	case d.stoppedAt.Load() != nil:
		stopAt = *d.stoppedAt.Load()
	}
	c.Ended = end.UTC()
	if d.capCtx.Err() != nil && end.Before(deadline) {
		c.Note = fmt.Sprintf("cut short by daemon shutdown after %.1f s of %.1f s", end.Sub(started).Seconds(), req.Duration.Seconds())
	}
	if res != nil {
		c.Session = filepath.Base(res.SessionDir)
		c.Streams = len(res.Streams)
		for _, s := range res.Streams {
			c.Records += s.Records
		}
		c.Dropped = res.Drops.Total
		if res.Bundle != "" {
			c.Bundle = filepath.Base(res.Bundle)
			if st, err := os.Stat(res.Bundle); err == nil {
				c.BundleBytes = st.Size()
			}
		}
		pids := map[int]bool{}
		for _, s := range res.Streams {
			pids[s.Pid] = true
		}
		for p := range pids {
			c.Pids = append(c.Pids, p)
		}
		sort.Ints(c.Pids)
	}
	if err != nil {
		c.State = StateFailed
		c.Error = err.Error()
		reason := "capture"
		var ce *capture.Error
		if errors.As(err, &ce) {
			switch ce.Code {
			case capture.ExitNoProcess:
				reason = "no_process"
			case capture.ExitSetup:
				reason = "setup"
			}
		}
		d.m.attachFailures.WithLabelValues(reason).Inc()
		d.m.captures.WithLabelValues("failed").Inc()
		log.Warn("capture failed", "err", err)
	} else {
		c.State = StateDone
		// What attach printed as it went, then the session's own warnings (metadata.json:
		// contended rings, producer messages, drops).
		c.Warnings = append(lw.lines, res.Warnings...)
		d.m.captures.WithLabelValues("done").Inc()
		if !stopAt.IsZero() {
			d.m.stopToBundle.Observe(end.Sub(stopAt).Seconds())
			c.StopToBundleSec = end.Sub(stopAt).Seconds()
		}
		log.Info("capture done", "bundle", c.Bundle, "bytes", c.BundleBytes, "records", c.Records, "dropped", c.Dropped)
	}
	d.m.bundleBytes.Add(float64(c.BundleBytes))
	d.m.records.Add(float64(c.Records))
	d.m.drops.Add(float64(c.Dropped))
	est := time.Duration(c.Records) * d.cfg.OverheadPerRecord
	d.m.overheadSec.Add(est.Seconds())
	if n := len(c.Pids); n > 0 && end.After(started) {
		d.m.overheadRatio.Set(est.Seconds() / end.Sub(started).Seconds() / float64(n))
	}
	if c.State == StateDone && !d.cfg.KeepDirs && c.Session != "" && c.Bundle != "" {
		if err := d.store.removeDir(c.ID, c.Session); err != nil {
			log.Warn("removing the expanded session (the bundle is kept)", "err", err)
		}
	}
	// Free the tree before publishing the end, so a client that saw "done" can start the
	// next capture at once.
	d.mu.Lock()
	delete(d.active, c.ID)
	d.mu.Unlock()
	d.m.running.Dec()
	if err := d.store.update(c); err != nil {
		log.Warn("writing the capture index", "err", err)
	}
	d.store.enforce(d.cfg.RetainSize, d.cfg.RetainAge, time.Now(), d.m)
}

// lineLogger turns capture.Attach's user messages into log lines and keeps them.
type lineLogger struct {
	log   interface{ Info(string, ...any) }
	mu    sync.Mutex
	buf   []byte
	lines []string
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.emit(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) emit(s string) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "profilemate-trace: ")
	if s == "" {
		return
	}
	l.log.Info(s)
	if len(l.lines) < 32 {
		l.lines = append(l.lines, s)
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(string(l.buf))
		l.buf = nil
	}
}

var _ io.Writer = (*lineLogger)(nil)

// Stop ends a running capture now; its bundle is written as for a window that ended.
func (d *Daemon) Stop(id string) error {
	d.mu.Lock()
	r, ok := d.active[id]
	d.mu.Unlock()
	if !ok {
		if _, known := d.store.get(id); known {
			return apiErr(409, "capture %s is not running", id)
		}
		return apiErr(404, "no capture %s", id)
	}
	now := time.Now()
	r.stopped.CompareAndSwap(nil, &now)
	r.cancel()
	return nil
}

// Delete removes a finished capture and its files.
func (d *Daemon) Delete(id string) error {
	d.mu.Lock()
	_, running := d.active[id]
	d.mu.Unlock()
	if running {
		return apiErr(409, "capture %s is running; stop it first (POST /captures/%s/stop)", id, id)
	}
	if _, ok := d.store.get(id); !ok {
		return apiErr(404, "no capture %s", id)
	}
	if err := d.store.remove(id); err != nil {
		return apiErr(500, "removing capture %s: %v", id, err)
	}
	d.store.enforce(d.cfg.RetainSize, d.cfg.RetainAge, time.Now(), d.m)
	return nil
}

// Processes returns the allowed vLLM processes of the last scan, with running captures.
func (d *Daemon) Processes() []Process {
	ps := d.disc.snapshot()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range ps {
		for id, r := range d.active {
			if ps[i].Root == r.root || ps[i].Pid == r.root {
				ps[i].Capture = id
			}
		}
	}
	return ps
}

// Run discovers, serves and schedules until ctx ends, then stops every capture (rings go
// back to dormant, bundles are written) and returns.
func (d *Daemon) Run(ctx context.Context) error {
	d.disc.scan() // before serving: GET /processes is complete from the first request
	srv, err := d.listen()
	if err != nil {
		d.store.close()
		return err
	}
	d.cfg.Log.Info("daemon started", "listen", d.cfg.Listen, "bundle_dir", d.cfg.BundleDir, "every", d.cfg.Every, "window", d.cfg.Window)
	scan := time.NewTicker(d.cfg.Scan)
	defer scan.Stop()
	retention := time.NewTicker(time.Minute)
	defer retention.Stop()
	var sched <-chan time.Time
	if d.cfg.Every > 0 {
		t := time.NewTicker(d.cfg.Every)
		defer t.Stop()
		sched = t.C
	}
	serveErr := srv.errc
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-serveErr:
			if err != nil {
				d.cfg.Log.Error("serving", "err", err)
				d.shutdown(srv)
				return err
			}
		case <-scan.C:
			d.disc.scan()
		case <-retention.C:
			d.store.enforce(d.cfg.RetainSize, d.cfg.RetainAge, time.Now(), d.m)
		case <-sched:
			d.scheduled()
		}
	}
	return d.shutdown(srv)
}

// scheduled starts one periodic window on every vLLM tree that is not busy.
func (d *Daemon) scheduled() {
	d.disc.scan()
	for _, p := range d.disc.snapshot() {
		if p.Pid != p.Root {
			continue
		}
		_, err := d.Start(Request{Pid: p.Pid, Duration: d.cfg.Window, Detail: d.cfg.ScheduleDetail, Trigger: "schedule"})
		if err != nil {
			d.m.scheduleSkips.Inc()
			d.cfg.Log.Info("periodic window skipped", "pid", p.Pid, "reason", err)
		}
	}
}

// shutdown stops accepting requests, ends every capture and waits for their bundles.
func (d *Daemon) shutdown(srv *servers) error {
	d.mu.Lock()
	d.closing = true
	n := len(d.active)
	d.mu.Unlock()
	d.cfg.Log.Info("stopping: ending captures in progress", "running", n)
	srv.close(2 * time.Second)
	now := time.Now()
	d.stoppedAt.Store(&now)
	d.capStop()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-time.After(d.cfg.ShutdownMax):
		err = fmt.Errorf("captures still writing their bundles after %s; those bundles may be missing", d.cfg.ShutdownMax)
	}
	d.store.close()
	d.cfg.Log.Info("stopped")
	return err
}

// pidAlive is used by tests.
func pidAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// procTree is the parent → children map of one /proc walk.
type procTree map[int][]int

func readTree(procRoot string) procTree {
	t := procTree{}
	ents, _ := os.ReadDir(procRoot)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat(procRoot, pid); ok {
			t[pp] = append(t[pp], pid)
		}
	}
	return t
}

// descendants returns root and every descendant (root even if it has exited: a capture
// in progress keeps its claim on the pid).
func (t procTree) descendants(root int) []int {
	out := []int{root}
	seen := map[int]bool{root: true}
	for i := 0; i < len(out); i++ {
		for _, c := range t[out[i]] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}
