//go:build linux

package cupti

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

var (
	buildDir string // absolute cupti/build
	agentSO  string
	testLib  string
	e2eProg  string
	buildErr error
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	buildDir = filepath.Join(wd, "build")
	agentSO = filepath.Join(buildDir, "libprofilemate.so")
	testLib = filepath.Join(buildDir, "testlib")
	e2eProg = filepath.Join(testLib, "e2e_prog")
	cmd := exec.Command("make", "-s", "-C", wd, "all", "testlibs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		buildErr = fmt.Errorf("make -C cupti all testlibs: %v\n%s", err, out)
	}
	os.Exit(m.Run())
}

func needBuild(t testing.TB) {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// proc is a running e2e program.
type proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	mu    sync.Mutex
	all   []string
	errb  *strings.Builder
	done  chan error
	start time.Time
}

// baseEnv returns the environment for a traced run: fake libcuda on the library
// path, the agent preloaded. extra entries override.
func baseEnv(preload bool, extra ...string) []string {
	env := []string{}
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "PROFILEMATE_") || strings.HasPrefix(e, "CUDA_INJECTION64_PATH=") ||
			strings.HasPrefix(e, "NVTX_INJECTION64_PATH=") || strings.HasPrefix(e, "LD_PRELOAD=") ||
			strings.HasPrefix(e, "LD_LIBRARY_PATH=") || strings.HasPrefix(e, "MOCK_CUPTI_") ||
			strings.HasPrefix(e, "FAKECUDA_") || strings.HasPrefix(e, "VLLM_PROFILING_VERBOSE=") {
			continue
		}
		env = append(env, e)
	}
	env = append(env, "LD_LIBRARY_PATH="+testLib)
	if preload {
		env = append(env, "LD_PRELOAD="+agentSO)
	}
	return append(env, extra...)
}

func startCmd(t testing.TB, env []string, name string, args ...string) *proc {
	t.Helper()
	needBuild(t)
	cmd := exec.Command(name, args...)
	cmd.Env = env
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	errb := &strings.Builder{}
	cmd.Stderr = &lockedWriter{b: errb}
	p := &proc{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 1000), errb: errb, done: make(chan error, 1)}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.all = append(p.all, sc.Text())
			p.mu.Unlock()
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return p
}

func start(t testing.TB, env []string, scenario string, args ...string) *proc {
	return startCmd(t, env, e2eProg, append([]string{scenario}, args...)...)
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (p *proc) stderr() string {
	lw := p.cmd.Stderr.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.b.String()
}

// waitLine waits for a stdout line starting with prefix and returns it.
func (p *proc) waitLine(prefix string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("program ended before %q; stdout %q stderr %q", prefix, p.allLines(), p.stderr())
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			p.t.Fatalf("no %q within %v; stdout %q stderr %q", prefix, timeout, p.allLines(), p.stderr())
		}
	}
}

func (p *proc) allLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.all...)
}

func (p *proc) send(s string) { io.WriteString(p.stdin, s+"\n") }

// wait waits for exit and returns the exit error (nil for status 0).
func (p *proc) wait(timeout time.Duration) error {
	p.t.Helper()
	for range p.lines {
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		p.t.Fatalf("program did not exit within %v", timeout)
	}
	return nil
}

func (p *proc) quit() {
	p.t.Helper()
	p.send("quit")
	if err := p.wait(10 * time.Second); err != nil {
		p.t.Fatalf("program failed: %v; stderr %q", err, p.stderr())
	}
}

// capture is everything decoded from one ring.
type capture struct {
	types    []record.Type
	kernels  []record.Kernel
	names    map[uint32]string
	nameRecs int
	graphs   []record.GraphTrace
	memcpys  []record.Memcpy
	memsets  []record.Memset
	syncs    []record.Sync
	apis     []record.API
	overhead []record.Overhead
	logs     []string
	controls []record.ControlChange
	procInfo []record.ProcessInfo
	procText []string
	stats    []record.AgentStats
	sstats   []record.StreamStats
	unknown  int
	// nameBeforeUse is false if a kernel used a name id before its kernel_name record
	nameBeforeUse bool
}

func newCapture() *capture { return &capture{names: map[uint32]string{}, nameBeforeUse: true} }

func (c *capture) add(t testing.TB, b []byte) error {
	typ := record.TypeOf(b)
	c.types = append(c.types, typ)
	var err error
	switch typ {
	case record.TypeKernel:
		var k record.Kernel
		k, err = record.DecodeKernel(b)
		if _, ok := c.names[k.NameID]; !ok && k.NameID != 0 {
			c.nameBeforeUse = false
		}
		c.kernels = append(c.kernels, k)
	case record.TypeKernelName:
		var n record.KernelName
		n, err = record.DecodeKernelName(b)
		c.names[n.NameID] = string(n.Name)
		c.nameRecs++
	case record.TypeGraphTrace:
		var g record.GraphTrace
		g, err = record.DecodeGraphTrace(b)
		c.graphs = append(c.graphs, g)
	case record.TypeMemcpy:
		var m record.Memcpy
		m, err = record.DecodeMemcpy(b)
		c.memcpys = append(c.memcpys, m)
	case record.TypeMemset:
		var m record.Memset
		m, err = record.DecodeMemset(b)
		c.memsets = append(c.memsets, m)
	case record.TypeSync:
		var s record.Sync
		s, err = record.DecodeSync(b)
		c.syncs = append(c.syncs, s)
	case record.TypeAPI:
		var a record.API
		a, err = record.DecodeAPI(b)
		c.apis = append(c.apis, a)
	case record.TypeOverhead:
		var o record.Overhead
		o, err = record.DecodeOverhead(b)
		c.overhead = append(c.overhead, o)
	case record.TypeAgentStats:
		var s record.AgentStats
		s, err = record.DecodeAgentStats(b)
		c.stats = append(c.stats, s)
	case record.TypeLog:
		var l record.Log
		l, err = record.DecodeLog(b)
		c.logs = append(c.logs, string(l.Text))
	case record.TypeControlChange:
		var cc record.ControlChange
		cc, err = record.DecodeControlChange(b)
		c.controls = append(c.controls, cc)
	case record.TypeProcessInfo:
		var pi record.ProcessInfo
		pi, err = record.DecodeProcessInfo(b)
		c.procInfo = append(c.procInfo, pi)
		c.procText = append(c.procText, string(pi.Text))
	case record.TypeStreamStats:
		var s record.StreamStats
		s, err = record.DecodeStreamStats(b)
		c.sstats = append(c.sstats, s)
	default:
		c.unknown++
	}
	if err != nil {
		t.Errorf("decode %v: %v", typ, err)
	}
	return nil
}

func (c *capture) drain(t testing.TB, r *ring.Reader) {
	t.Helper()
	if _, err := r.Read(func(b []byte) error { return c.add(t, b) }); err != nil {
		t.Fatal(err)
	}
}

func (c *capture) kernelsNamed() map[string]int {
	m := map[string]int{}
	for _, k := range c.kernels {
		m[c.names[k.NameID]]++
	}
	return m
}

func (c *capture) lastStats() record.AgentStats {
	if len(c.stats) == 0 {
		return record.AgentStats{}
	}
	return c.stats[len(c.stats)-1]
}

// findRing waits until pid has exactly one cupti ring and opens it.
func findRing(t testing.TB, pid int, timeout time.Duration) *ring.Reader {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		found, err := ring.Find(pid)
		var cup []ring.Found
		for _, f := range found {
			if f.Source == "cupti" {
				cup = append(cup, f)
			}
		}
		if err == nil && len(cup) == 1 {
			r, err := ring.Open(cup[0].Path)
			if err == nil {
				t.Cleanup(func() { r.Close() })
				return r
			}
			if !errors.Is(err, ring.ErrNotReady) || time.Now().After(deadline) {
				t.Fatal(err)
			}
		}
		if len(cup) > 1 {
			t.Fatalf("pid %d has %d cupti rings", pid, len(cup))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cupti ring in /proc/%d/fd (%v, %v)", pid, found, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pidOf(t testing.TB, line string) int {
	var pid int
	if _, err := fmt.Sscanf(line, "PID %d", &pid); err != nil {
		t.Fatalf("bad PID line %q", line)
	}
	return pid
}

// pollUntil drains r into c until cond holds or timeout.
func pollUntil(t testing.TB, r *ring.Reader, c *capture, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.drain(t, r)
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
