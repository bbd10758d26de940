// Package collect drains the shared-memory rings of a traced process tree into raw stream
// files. It finds rings two ways: producers hand them over on the control socket the moment
// they exist (run), and a periodic scan of /proc/PID/fd finds the rest (attach, and any
// producer whose hand-over failed). Rings are told apart by inode, because a forked child
// inherits its parent's descriptors.
package collect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

// DefaultPoll is how often rings are drained: short enough that a 16 MiB ring never fills
// at a million records a second, long enough to cost nothing measurable.
const DefaultPoll = 100 * time.Millisecond

// DefaultScan is how often the process tree and fd tables are rescanned.
const DefaultScan = 250 * time.Millisecond

// Options configure a Collector.
type Options struct {
	// Create opens a raw stream file by base name ("<pid>.<source>.pmr").
	Create func(name string) (io.WriteCloser, error)
	// Enable, when set, switches every ring found to collecting at Detail (attach); with
	// run, producers start enabled through PROFILEMATE_START and this may stay false.
	Enable bool
	Detail ring.Detail
	// SampleEvery asks the agent for kernel detail on one step in N (0 = all).
	SampleEvery uint32
	// DisableOnFinish returns every ring to dormant when collection ends (attach/detach).
	DisableOnFinish bool
	Poll, Scan      time.Duration
	Log             *slog.Logger
	// Progress, if set, is called after each drain with the running totals.
	Progress func(Totals)
}

// Totals are running counters over all streams.
type Totals struct {
	Streams  int
	Records  uint64
	Dropped  uint64
	Launches uint64 // kernels and graph launches seen (the "operations" of VLLM_PROFILING_LOG_INTERVAL)
}

// StreamInfo describes one collected stream at the end.
type StreamInfo struct {
	File           string `json:"file"`
	Source         string `json:"source"`
	Pid            int    `json:"pid"`
	NsPid          int    `json:"ns_pid,omitempty"`
	Comm           string `json:"comm,omitempty"`
	Records        uint64 `json:"records"`
	RecordsDropped uint64 `json:"records_dropped"`
	BytesDropped   uint64 `json:"bytes_dropped"`
	SourceDropped  uint64 `json:"source_dropped"`
	ProducerState  string `json:"producer_state"`
	ReadError      string `json:"read_error,omitempty"`
	FoundVia       string `json:"found_via"`
	CuptiVersion   uint32 `json:"cupti_version,omitempty"`
	CudaDriver     uint32 `json:"cuda_driver_version,omitempty"`
	ProducerDetail string `json:"producer_info,omitempty"`
	// Messages are the producer's warnings and errors (log records of level ≥ 2), at most
	// maxMessages of them.
	Messages []string `json:"messages,omitempty"`
}

// maxMessages bounds the producer messages kept per stream for metadata.json; every log
// record stays in the raw stream.
const maxMessages = 20

type stream struct {
	info    StreamInfo
	tidSeen map[uint32]bool // namespace tids already written as tid_map records
	r       *ring.Reader
	f       io.WriteCloser
	w       *record.RawWriter
	dead    bool
	launch  uint64
}

// Contention is a ring that another tracer was reading when this collector found it. A ring
// has one consumer (ring.Reader.Claim): the collector does not read or steer it, and takes it
// over at a later scan if the other tracer lets go.
type Contention struct {
	Pid           int     `json:"pid"`
	Source        string  `json:"source"`
	Holder        int     `json:"holder_pid,omitempty"`
	HolderCmdline string  `json:"holder_cmdline,omitempty"`
	RefusedSec    float64 `json:"refused_sec"`              // seconds into the capture of the first refusal
	TakenOverSec  float64 `json:"taken_over_sec,omitempty"` // seconds into the capture it was ours; 0 = never
}

// Collector owns the rings and raw files of one capture.
type Collector struct {
	opts      Options
	mu        sync.Mutex
	streams   map[uint64]*stream // by ring inode
	contended map[uint64]*Contention
	roots     map[int]bool
	seen      map[int]bool
	start     time.Time
}

// New returns a Collector; call Watch and Run, then Finish.
func New(opts Options) *Collector {
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	if opts.Scan <= 0 {
		opts.Scan = DefaultScan
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Collector{opts: opts, streams: map[uint64]*stream{}, contended: map[uint64]*Contention{}, roots: map[int]bool{}, seen: map[int]bool{}, start: time.Now()}
}

// Watch adds pid and, from then on, its descendants to the scanned tree.
func (c *Collector) Watch(pid int) {
	c.mu.Lock()
	c.roots[pid] = true
	c.mu.Unlock()
}

// Pids returns every process of the watched tree seen so far.
func (c *Collector) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for p := range c.seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// Add takes over a ring handed over on the control socket (or opened by the caller).
func (c *Collector) Add(pid int, source string, f *os.File, via string) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.streams[st.Ino]; ok {
		f.Close()
		return nil
	}
	r, err := ring.OpenFile(f)
	if err != nil {
		return fmt.Errorf("ring of pid %d (%s): %w", pid, source, err)
	}
	if err := r.Claim(); err != nil {
		r.Close()
		var ce *ring.ClaimError
		if !errors.As(err, &ce) {
			return fmt.Errorf("ring of pid %d (%s): %w", pid, source, err)
		}
		if _, ok := c.contended[st.Ino]; !ok {
			c.contended[st.Ino] = &Contention{Pid: pid, Source: source, Holder: ce.Holder, HolderCmdline: ce.Cmdline,
				RefusedSec: time.Since(c.start).Seconds()}
			c.opts.Log.Warn(fmt.Sprintf("pid %d (%s): another tracer reads this ring; collecting it only if that tracer lets go", pid, source),
				"holder", ce.Who())
		}
		return nil
	}
	if ct, ok := c.contended[st.Ino]; ok && ct.TakenOverSec == 0 {
		ct.TakenOverSec = time.Since(c.start).Seconds()
		c.opts.Log.Warn(fmt.Sprintf("pid %d (%s): the other tracer let go of this ring after %.1f s; collecting it from now on", pid, source, ct.TakenOverSec))
	}
	h := r.Header()
	if h.Pid != 0 && int(h.Pid) != pid && via == "scan" {
		// An inherited descriptor: the ring belongs to the process that created it. Keep
		// it under its creator only if that pid is one we can name; otherwise under pid.
		if creator := hostPidOf(pid, int(h.Pid)); creator > 0 {
			pid = creator
		}
	}
	name := fmt.Sprintf("%d.%s.pmr", pid, source)
	if exists(c.streams, name) {
		name = fmt.Sprintf("%d.%s.%d.pmr", pid, source, st.Ino)
	}
	out, err := c.opts.Create(name)
	if err != nil {
		r.Close()
		return err
	}
	meta := record.StreamMeta{Source: source, Pid: pid, Comm: readComm(pid), Cmdline: readCmdline(pid), StartNs: ring.MonotonicNs()}
	if int(h.Pid) != pid {
		meta.NsPid = int(h.Pid)
	}
	if pp := readPpid(pid); pp > 0 {
		meta.Ppid = pp
	}
	w, err := record.NewRawWriter(out, meta)
	if err != nil {
		out.Close()
		r.Close()
		return err
	}
	s := &stream{r: r, f: out, w: w, info: StreamInfo{File: "raw/" + name, Source: source, Pid: pid, NsPid: meta.NsPid, Comm: meta.Comm, FoundVia: via}}
	c.streams[st.Ino] = s
	if c.opts.Enable && ring.Source(h.Source) == ring.SourceCUPTI {
		r.SetControl(c.opts.Detail != ring.DetailOff, c.opts.Detail, c.opts.SampleEvery)
	} else if c.opts.Enable {
		r.SetControl(true, c.opts.Detail, c.opts.SampleEvery)
	}
	r.Heartbeat()
	c.opts.Log.Debug("stream found", "pid", pid, "source", source, "via", via, "file", name)
	return nil
}

// Contended returns the rings another tracer was reading when this collector found them,
// by pid and source.
func (c *Collector) Contended() []Contention {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Contention, 0, len(c.contended))
	for _, ct := range c.contended {
		out = append(out, *ct)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pid != out[j].Pid {
			return out[i].Pid < out[j].Pid
		}
		return out[i].Source < out[j].Source
	})
	return out
}

// Message says what a contention cost this capture, for metadata.json's warnings.
func (ct Contention) Message() string {
	who := "another tracer, " + (&ring.ClaimError{Holder: ct.Holder, Cmdline: ct.HolderCmdline}).Who() + ","
	if ct.TakenOverSec == 0 {
		return fmt.Sprintf("pid %d (%s): %s was reading this ring from %.1f s into the capture to its end: its records of that time are in that tracer's session, not this one (one tracer per process; stop the other capture first)",
			ct.Pid, ct.Source, who, ct.RefusedSec)
	}
	return fmt.Sprintf("pid %d (%s): %s was reading this ring until %.1f s into the capture: its records before that are in that tracer's session, not this one",
		ct.Pid, ct.Source, who, ct.TakenOverSec)
}

func exists(m map[uint64]*stream, name string) bool {
	for _, s := range m {
		if s.info.File == "raw/"+name {
			return true
		}
	}
	return false
}

// Run drains rings and rescans the tree until ctx ends. Rings arriving on sock are added.
func (c *Collector) Run(ctx context.Context, sock *ring.ControlSocket) {
	poll := time.NewTicker(c.opts.Poll)
	defer poll.Stop()
	scan := time.NewTicker(c.opts.Scan)
	defer scan.Stop()
	var incoming <-chan ring.Incoming
	if sock != nil {
		incoming = sock.Incoming()
	}
	c.scan()
	for {
		select {
		case <-ctx.Done():
			// Rings handed over just before the end (a process that lived a few ms) are
			// still queued on the socket: take them, or their records would be lost.
			for incoming != nil {
				select {
				case in, ok := <-incoming:
					if !ok {
						return
					}
					if err := c.Add(hostPid(in), in.Source, in.File, "socket"); err != nil {
						c.opts.Log.Warn("taking over a ring", "pid", in.Pid, "source", in.Source, "err", err)
					}
				default:
					return
				}
			}
			return
		case in, ok := <-incoming:
			if !ok {
				incoming = nil
				continue
			}
			if err := c.Add(hostPid(in), in.Source, in.File, "socket"); err != nil {
				c.opts.Log.Warn("taking over a ring", "pid", in.Pid, "source", in.Source, "err", err)
			}
		case <-scan.C:
			c.scan()
		case <-poll.C:
			c.Drain()
		}
	}
}

// hostPid is the producer's pid in our namespace: the socket's peer credentials when the
// kernel gave them, else what the producer said.
func hostPid(in ring.Incoming) int {
	if in.HostPid > 0 {
		return in.HostPid
	}
	return in.Pid
}

// mapThreads appends a tid_map record for every thread of a namespaced producer not mapped yet:
// CUPTI and the hook report namespace thread ids, eBPF host ones, and the joiner needs both.
// Threads that start and end between two scans stay unmapped.
func (c *Collector) mapThreads() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.streams {
		if s.dead || s.info.NsPid == 0 {
			continue
		}
		var recs []byte
		for ns, host := range nsThreads(s.info.Pid) {
			if s.tidSeen[ns] {
				continue
			}
			if s.tidSeen == nil {
				s.tidSeen = map[uint32]bool{}
			}
			s.tidSeen[ns] = true
			recs = record.AppendTIDMap(recs, &record.TIDMap{TsNS: ring.MonotonicNs(), NSTID: ns, HostTID: host})
		}
		if len(recs) > 0 {
			if err := s.w.Write(recs); err != nil {
				c.opts.Log.Warn("writing thread ids", "file", s.info.File, "err", err)
			}
		}
	}
}

// nsThreads maps the innermost-namespace thread ids of pid's threads to host thread ids.
func nsThreads(pid int) map[uint32]uint32 {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint32]uint32{}
	for _, e := range ents {
		host, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns := nsLast(filepath.Join(strconv.Itoa(pid), "task", e.Name())); ns > 0 {
			out[uint32(ns)] = uint32(host)
		}
	}
	return out
}

// scan walks the watched tree and opens rings not seen before.
func (c *Collector) scan() {
	c.mu.Lock()
	roots := make([]int, 0, len(c.roots))
	for p := range c.roots {
		roots = append(roots, p)
	}
	c.mu.Unlock()
	defer c.mapThreads()
	for _, pid := range Descendants(roots) {
		c.mu.Lock()
		c.seen[pid] = true
		c.mu.Unlock()
		found, err := ring.Find(pid)
		if err != nil {
			continue
		}
		for _, fd := range found {
			f, err := os.OpenFile(fd.Path, os.O_RDWR, 0)
			if err != nil {
				c.opts.Log.Debug("opening ring", "path", fd.Path, "err", err)
				continue
			}
			if err := c.Add(pid, fd.Source, f, "scan"); err != nil {
				c.opts.Log.Warn("reading a ring", "pid", pid, "err", err)
			}
		}
	}
}

// Drain reads everything available from every ring once.
func (c *Collector) Drain() Totals {
	c.mu.Lock()
	defer c.mu.Unlock()
	var t Totals
	for _, s := range c.streams {
		if !s.dead {
			c.drainOne(s)
			s.r.Heartbeat()
		}
		h := s.r.Header()
		t.Streams++
		t.Records += s.w.Records()
		t.Dropped += h.RecordsDropped + h.SourceDropped
		t.Launches += s.launch
	}
	if c.opts.Progress != nil {
		c.opts.Progress(t)
	}
	return t
}

func (c *Collector) drainOne(s *stream) {
	_, err := s.r.Read(func(rec []byte) error {
		switch record.TypeOf(rec) {
		case record.TypeKernel, record.TypeGraphTrace:
			s.launch++
		case record.TypeLog:
			if l, err := record.DecodeLog(rec); err == nil && l.Level >= 2 && len(s.info.Messages) < maxMessages {
				s.info.Messages = append(s.info.Messages, string(l.Text))
			}
		case record.TypeProcessInfo:
			if p, err := record.DecodeProcessInfo(rec); err == nil {
				s.info.CuptiVersion = p.CuptiVersion
				s.info.CudaDriver = p.CudaDriverVersion
				s.info.ProducerDetail = string(p.Text)
			}
		}
		return s.w.Write(rec)
	})
	if err != nil {
		s.dead = true
		s.info.ReadError = err.Error()
		c.opts.Log.Warn("stream stopped: corrupt ring; records before the fault are kept", "file", s.info.File, "err", err)
	}
}

// Finish drains a last time, appends a stream_stats record to every stream, closes
// everything and returns what was collected. Rings are returned to dormant when
// DisableOnFinish is set.
func (c *Collector) Finish() ([]StreamInfo, error) {
	// Two passes: producers flush on their own thread every few hundred ms, and a process
	// that just exited has nothing more to give, so a short settle is enough.
	c.mapThreads()
	c.Drain()
	time.Sleep(c.opts.Poll)
	c.Drain()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	var out []StreamInfo
	for _, s := range c.streams {
		if c.opts.DisableOnFinish {
			s.r.SetControl(false, ring.DetailOff, 0)
		}
		h := s.r.Header()
		s.info.Records = s.w.Records()
		s.info.RecordsDropped = h.RecordsDropped
		s.info.BytesDropped = h.BytesDropped
		s.info.SourceDropped = h.SourceDropped
		s.info.ProducerState = stateName(h.ProducerState)
		stats := record.StreamStats{TsNS: ring.MonotonicNs(), RecordsWritten: h.RecordsWritten, RecordsDropped: h.RecordsDropped, BytesDropped: h.BytesDropped, SourceDropped: h.SourceDropped}
		if err := s.w.Write(record.AppendStreamStats(nil, &stats)); err != nil {
			errs = append(errs, err)
		}
		if err := s.w.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.info.File, err))
		}
		if err := s.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.info.File, err))
		}
		s.r.Close()
		out = append(out, s.info)
	}
	c.streams = map[uint64]*stream{}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out, errors.Join(errs...)
}

func stateName(s uint32) string {
	switch s {
	case ring.StateInit:
		return "init"
	case ring.StateRunning:
		return "running"
	case ring.StateExited:
		return "exited"
	case ring.StatePassive:
		return "passive"
	case ring.StateFailed:
		return "failed"
	}
	return "state_" + strconv.Itoa(int(s))
}

// Descendants returns roots and every live descendant, from /proc.
func Descendants(roots []int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := readPpid(pid); pp > 0 {
			children[pp] = append(children[pp], pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(p))); err == nil {
			out = append(out, p)
		}
		for _, ch := range children[p] {
			walk(ch)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	sort.Ints(out)
	return out
}

func readPpid(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// comm may contain spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

func readComm(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}

func readCmdline(pid int) []string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// hostPidOf maps a pid as seen inside pid's namespace (nsPid) to the host pid, looking at
// pid itself and its ancestors (a ring inherited over fork belongs to an ancestor).
func hostPidOf(pid, nsPid int) int {
	for p, i := pid, 0; p > 1 && i < 64; p, i = readPpid(p), i+1 {
		if nsLast(strconv.Itoa(p)) == nsPid {
			return p
		}
	}
	return 0
}

// nsLast returns the innermost namespace id from /proc/<rel>/status NSpid (rel = "PID" or
// "PID/task/TID").
func nsLast(rel string) int {
	b, err := os.ReadFile(filepath.Join("/proc", rel, "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// Sources lists the sources of the streams collected so far (one entry per stream).
func (c *Collector) Sources() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.streams {
		out = append(out, s.info.Source)
	}
	return out
}
