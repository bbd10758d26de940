//go:build linux

package inject

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requirePrivileged skips a test that needs root (ptrace of another process, /proc/PID/map_files),
// except under CI=true where a skip would hide a broken setup: there it fails.
func requirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("test requires root (CI=true: privileged tests must run)")
	}
	t.Skip("test requires root")
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// built compiles testdata/testlib.c and testdata/target.c once per test binary. The library is
// named as a staged agent (profilemate-inject-…/libprofilemate.so) so that re-injection finds it.
func built(t testing.TB) (lib, target string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "pm-inject-test-")
		if buildErr != nil {
			return
		}
		os.Mkdir(filepath.Join(buildDir, "bin"), 0o755)
		for _, c := range [][]string{
			{"cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fPIC", "-shared", "-fvisibility=hidden",
				"-o", filepath.Join(buildDir, "bin", agentName), "testdata/testlib.c"},
			{"cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-o", filepath.Join(buildDir, "bin", "target"), "testdata/target.c", "-lpthread"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%v: %v\n%s", c, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "bin", agentName), filepath.Join(buildDir, "bin", "target")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// proc is a started test target speaking the target.c / pytarget.py protocol.
type proc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	pid   int
	ready []int // the READY line's numbers after the pid
}

func start(t testing.TB, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := p.line(10 * time.Second)
	if err != nil || !strings.HasPrefix(line, "READY ") {
		t.Fatalf("target did not start: %q %v", line, err)
	}
	for i, f := range strings.Fields(line)[1:] {
		n, _ := strconv.Atoi(f)
		if i == 0 {
			p.pid = n
		} else {
			p.ready = append(p.ready, n)
		}
	}
	if p.pid != cmd.Process.Pid {
		t.Fatalf("READY pid %d, started %d", p.pid, cmd.Process.Pid)
	}
	return p
}

func (p *proc) line(d time.Duration) (string, error) {
	ch := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := p.out.ReadString('\n')
		if err != nil {
			errc <- err
			return
		}
		ch <- strings.TrimSpace(l)
	}()
	select {
	case l := <-ch:
		return l, nil
	case err := <-errc:
		return "", err
	case <-time.After(d):
		return "", fmt.Errorf("no output within %v", d)
	}
}

// ping asks the target for its counters.
func (p *proc) ping(t testing.TB) []int64 {
	t.Helper()
	if _, err := io.WriteString(p.in, "ping\n"); err != nil {
		t.Fatalf("ping: %v", err)
	}
	l, err := p.line(5 * time.Second)
	if err != nil || !strings.HasPrefix(l, "pong ") {
		t.Fatalf("ping: %q %v", l, err)
	}
	var out []int64
	for _, f := range strings.Fields(l)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		out = append(out, n)
	}
	return out
}

// tracerPids returns the TracerPid of every thread of pid that has one.
func tracerPids(pid int) map[int]string {
	out := map[int]string{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "TracerPid:") && strings.TrimSpace(l[10:]) != "0" {
				tid, _ := strconv.Atoi(e.Name())
				out[tid] = strings.TrimSpace(l[10:])
			}
		}
	}
	return out
}

// mappedCount counts distinct files mapped in pid whose path contains s.
func mappedCount(t testing.TB, pid int, s string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.Contains(l, s) {
			seen[f[4]] = true // by inode
		}
	}
	return len(seen)
}

func itoa(n int) string { return strconv.Itoa(n) }

// startAs starts a command with another uid and gid and returns its pid.
func startAs(t testing.TB, uid, gid uint32, argv ...string) int {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

func owner(t testing.TB, p string) (uint32, uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}
