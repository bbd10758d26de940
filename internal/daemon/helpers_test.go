package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// repoRoot is the module root (tests run in internal/daemon).
var repoRoot, _ = filepath.Abs("../..")

// agentLibs are the real agent and its test doubles (cupti/build); empty when they could not
// be built, and the fake tree then emulates the agent's ring protocol in Python.
var agentSO, testLibDir string

func TestMain(m *testing.M) {
	so := filepath.Join(repoRoot, "cupti/build/libprofilemate.so")
	tl := filepath.Join(repoRoot, "cupti/build/testlib")
	if _, err := os.Stat(filepath.Join(tl, "libcuda.so.1")); err != nil {
		// Build them the way CI does; failure leaves the Python emulation in place.
		cmd := exec.Command("make", "-s", "-C", filepath.Join(repoRoot, "cupti"), "testlibs")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Run()
	}
	// Work on a private copy: cupti/build may be rebuilt (or cleaned) while these tests run.
	if tmp, err := os.MkdirTemp("", "pmagent"); err == nil {
		if exec.Command("cp", "-R", tl, filepath.Join(tmp, "testlib")).Run() == nil &&
			exec.Command("cp", so, filepath.Join(tmp, "libprofilemate.so")).Run() == nil {
			if _, err := os.Stat(filepath.Join(tmp, "testlib", "libcuda.so.1")); err == nil {
				agentSO, testLibDir = filepath.Join(tmp, "libprofilemate.so"), filepath.Join(tmp, "testlib")
			}
		}
	}
	if agentSO == "" {
		fmt.Fprintln(os.Stderr, "daemon tests: cupti/build test libraries unavailable (make -C cupti testlibs failed); the fake vLLM processes emulate the agent's ring protocol in Python")
	}
	code := m.Run()
	if agentSO != "" {
		os.RemoveAll(filepath.Dir(agentSO))
	}
	os.Exit(code)
}

// fakeTree is a running testdata/fake_vllm.py process tree.
type fakeTree struct {
	cmd    *exec.Cmd
	pid    int
	health string
}

// startFake starts a fake vLLM tree (role server: engine core + workers; role solo: one
// process) with the real agent when available.
func startFake(t testing.TB, role string, workers int, env ...string) *fakeTree {
	t.Helper()
	dir, err := os.MkdirTemp("", "pmfake")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	health := filepath.Join(dir, "health")
	cmd := exec.Command("python3", filepath.Join(repoRoot, "internal/daemon/testdata/fake_vllm.py"),
		"--role", role, "--workers", strconv.Itoa(workers), "--health", health)
	cmd.Env = append(os.Environ(), "PROFILEMATE_FLUSH_MS=50")
	if agentSO != "" {
		cmd.Env = append(cmd.Env, "FAKE_VLLM_AGENT=1", "LD_PRELOAD="+agentSO, "LD_LIBRARY_PATH="+testLibDir)
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &fakeTree{cmd: cmd, pid: cmd.Process.Pid, health: health}
	t.Cleanup(func() {
		syscall.Kill(-f.pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-f.pid, syscall.SIGKILL)
			<-done
		}
	})
	// Ready when every process of the tree holds its ring.
	want := 1
	if role == "server" {
		want = 2 + workers
	}
	waitFor(t, 20*time.Second, fmt.Sprintf("%d rings in fake tree %d", want, f.pid), func() bool {
		return len(f.rings()) == want
	})
	return f
}

// pids returns the pids of the tree that hold a ring.
func (f *fakeTree) rings() map[int]string {
	out := map[int]string{}
	for _, pid := range descendants(f.pid) {
		found, _ := ring.Find(pid)
		for _, r := range found {
			if r.Source == "cupti" {
				out[pid] = r.Path
			}
		}
	}
	return out
}

// header reads the ring header of pid.
func ringHeader(t testing.TB, path string) ring.Header {
	t.Helper()
	r, err := ring.Open(path)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer r.Close()
	return r.Header()
}

// beats returns the health counter of pid (0 if none yet).
func (f *fakeTree) beats(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("%s.%d", f.health, pid))
	fs := strings.Fields(string(b))
	if len(fs) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(fs[0])
	return n
}

func descendants(root int) []int {
	kids := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat("/proc", pid); ok {
			kids[pp] = append(kids[pp], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testDaemon is an in-process daemon on a unix socket in a private directory.
type testDaemon struct {
	d      *Daemon
	cfg    Config
	sock   string
	cl     *Client
	http   *http.Client
	cancel context.CancelFunc
	done   chan error
}

func shortTemp(t testing.TB, pattern string) string {
	dir, err := os.MkdirTemp("", pattern) // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func newTestDaemon(t testing.TB, mod func(*Config)) *testDaemon {
	t.Helper()
	dir := shortTemp(t, "pmd")
	cfg := Config{Listen: "unix:" + filepath.Join(dir, "api.sock"), BundleDir: filepath.Join(dir, "bundles"),
		Scan: 200 * time.Millisecond, MaxDuration: 2 * time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	return runTestDaemon(t, cfg)
}

func runTestDaemon(t testing.TB, cfg Config) *testDaemon {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	td := &testDaemon{d: d, cfg: d.cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { td.done <- d.Run(ctx) }()
	td.cl = NewClient(d.cfg.Listen, d.cfg.Token)
	td.http = td.cl.hc
	td.sock = strings.TrimPrefix(d.cfg.Listen, "unix:")
	waitFor(t, 5*time.Second, "daemon listening", func() bool {
		resp, err := td.raw("GET", "/healthz", "", nil)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	t.Cleanup(td.stop)
	return td
}

func (td *testDaemon) stop() {
	if td.cancel == nil {
		return
	}
	td.cancel()
	<-td.done
	td.cancel = nil
}

// raw sends a request with an arbitrary body and headers.
func (td *testDaemon) raw(method, path, body string, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequest(method, td.cl.base+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return td.http.Do(req)
}

// post sends POST /captures and returns the status and the decoded body.
func (td *testDaemon) post(t testing.TB, body string) (int, CaptureResponse, string) {
	t.Helper()
	resp, err := td.raw("POST", "/captures", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var cr CaptureResponse
	var e struct{ Error string }
	if resp.StatusCode == 202 {
		if err := json.Unmarshal(b, &cr); err != nil {
			t.Fatalf("decoding %s: %v", b, err)
		}
	} else if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
		t.Fatalf("error response without a JSON message: %d %s", resp.StatusCode, b)
	}
	return resp.StatusCode, cr, e.Error
}

func (td *testDaemon) capture(t testing.TB, body string) Capture {
	t.Helper()
	code, cr, msg := td.post(t, body)
	if code != 202 || len(cr.Captures) != 1 {
		t.Fatalf("POST /captures %s: %d %s", body, code, msg)
	}
	return cr.Captures[0]
}

func (td *testDaemon) wait(t testing.TB, id string) Capture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := td.cl.Wait(ctx, id)
	if err != nil {
		t.Fatalf("waiting for %s: %v", id, err)
	}
	return c
}

func (td *testDaemon) metric(t testing.TB, name string) float64 {
	t.Helper()
	resp, err := td.raw("GET", "/metrics", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

func openFds() int {
	ents, _ := os.ReadDir("/proc/self/fd")
	return len(ents)
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var _ = bytes.NewReader
