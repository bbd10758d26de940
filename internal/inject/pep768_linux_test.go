package inject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// Tests against a real CPython 3.14 (PM_PYTHON314, from scripts/ci/python314.sh). They need root
// (or CAP_SYS_PTRACE) for process_vm_writev; under CI=true a missing prerequisite fails instead of
// skipping, as in the repo's other privileged tests.

// pep768Require skips (fails under CI=true) unless the test can run: root, and the interpreter
// named by env (a path) exists.
func pep768Require(t *testing.T, env, fallback string) string {
	t.Helper()
	skip := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI=true: this test must run)", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		skip("test requires root (process_vm_writev into another process)")
	}
	py := fallback
	if env != "" {
		py = os.Getenv(env)
		if py == "" {
			skip(env + " is unset (run scripts/ci/python314.sh and export its last line)")
		}
	}
	if _, err := os.Stat(py); err != nil {
		skip(fmt.Sprintf("interpreter %s: %v", py, err))
	}
	return py
}

// pep768Target program: "busy" runs bytecode on the main thread, "sleep" sleeps in 20 ms steps,
// "blocked" parks the main thread in a read() of stdin (no thread runs bytecode until the test
// writes a byte), "thread" does the same while a daemon thread named pm-worker runs bytecode.
// (A main thread in Thread.join() is no good for the latter: 3.14's join wakes up to take the
// request.)
const pep768TargetPy = `
import os, sys, threading, time
mode, ready = sys.argv[1], sys.argv[2]
def busy():
    n = 0
    while True:
        n += 1
if mode == "thread":
    w = threading.Thread(target=busy, name="pm-worker", daemon=True)
    w.start()
open(ready, "w").close()
if mode == "busy":
    busy()
elif mode == "sleep":
    while True:
        time.sleep(0.02)
elif mode in ("blocked", "thread"):
    os.read(0, 1)
`

// pep768Marker is the injected script: it writes "<pid> <thread name>" to the marker file
// (atomically, through a rename).
const pep768MarkerPy = `
import os, threading
with open(%[1]q + ".tmp", "w") as f:
    f.write("%%d %%s\n" %% (os.getpid(), threading.current_thread().name))
os.rename(%[1]q + ".tmp", %[1]q)
`

type pep768Proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	dir    string
	script string // the injected script
	marker string // what it writes
	done   chan struct{}
}

// pep768Start runs the target program in mode under py (with extra environment and arguments)
// and waits until it is running its loop.
func pep768Start(t *testing.T, py, mode string, env []string, args ...string) *pep768Proc {
	t.Helper()
	dir := t.TempDir()
	prog := filepath.Join(dir, "target.py")
	ready := filepath.Join(dir, "ready")
	p := &pep768Proc{dir: dir, script: filepath.Join(dir, "inject.py"), marker: filepath.Join(dir, "marker"), done: make(chan struct{})}
	for _, f := range []struct{ path, text string }{
		{prog, pep768TargetPy},
		{p.script, fmt.Sprintf(pep768MarkerPy, p.marker)},
	} {
		if err := os.WriteFile(f.path, []byte(f.text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.cmd = exec.Command(py, append(append(args, prog), mode, ready)...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = os.Stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil && (mode != "blocked" && mode != "thread" || pep768InRead(p.cmd.Process.Pid)) {
			// blocked/thread: the ready file is written just before os.read(); wait until the
			// main thread is really parked in read(2), or it may still take the request itself.
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("target %s %s exited before it was ready: %v", py, mode, p.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("target %s %s not ready after 20 s", py, mode)
		}
	}
}

// pep768InRead reports whether the process's main thread is in read(2).
func pep768InRead(pid int) bool {
	nr := "0 " // x86-64
	if runtime.GOARCH == "arm64" {
		nr = "63 "
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
	return err == nil && strings.HasPrefix(string(b), nr)
}

// waitMarker waits up to bound for the injected script's marker and returns its pid and thread name.
func (p *pep768Proc) waitMarker(t *testing.T, bound time.Duration) (int, string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(p.marker); err == nil {
			f := strings.Fields(string(b))
			if len(f) != 2 {
				t.Fatalf("marker %q", b)
			}
			pid, _ := strconv.Atoi(f[0])
			return pid, f[1]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the injected script did not run within %v", bound)
	return 0, ""
}

func TestPEP768RemoteExec(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	for _, mode := range []string{"busy", "sleep"} {
		t.Run(mode, func(t *testing.T) {
			p := pep768Start(t, py, mode, nil)
			if major, minor, err := PythonVersion(p.cmd.Process.Pid); err != nil || major != 3 || minor != 14 {
				t.Fatalf("PythonVersion = %d.%d, %v; want 3.14", major, minor, err)
			}
			start := time.Now()
			if err := RemoteExec(p.cmd.Process.Pid, p.script); err != nil {
				t.Fatal(err)
			}
			pid, thread := p.waitMarker(t, 5*time.Second)
			t.Logf("%s: script ran %v after the request", mode, time.Since(start).Round(time.Millisecond))
			if pid != p.cmd.Process.Pid || thread != "MainThread" {
				t.Fatalf("script ran in pid %d thread %s; want pid %d MainThread", pid, thread, p.cmd.Process.Pid)
			}
			// The request is consumed: nothing pending is left on the thread.
			tg, err := pep768Open(p.cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			ts, err := tg.mainOrHolder()
			if err != nil {
				t.Fatal(err)
			}
			if n, err := tg.pending(ts); err != nil || n != 0 {
				t.Fatalf("pending after the run = %d, %v", n, err)
			}
			// The target keeps running.
			select {
			case <-p.done:
				t.Fatalf("target exited after the script: %v", p.cmd.ProcessState)
			case <-time.After(100 * time.Millisecond):
			}
		})
	}
}

// The offsets read from the live interpreter agree with what the process shows from outside.
func TestPEP768LiveLayout(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	p := pep768Start(t, py, "sleep", nil)
	pid := p.cmd.Process.Pid
	tg, err := pep768Open(pid)
	if err != nil {
		t.Fatal(err)
	}
	if tg.off.ScriptPathSize != 512 {
		t.Errorf("debugger_script_path_size = %d, want 512 (_Py_MAX_SCRIPT_PATH_SIZE in 3.14)", tg.off.ScriptPathSize)
	}
	main, err := tg.readPtr(tg.interp + tg.off.ThreadsMain)
	if err != nil || main == 0 {
		t.Fatalf("threads.main = %#x, %v", main, err)
	}
	tid, err := tg.readPtr(main + tg.off.TStateNativeTID)
	if err != nil || int(tid) != pid {
		t.Fatalf("main thread's native_thread_id = %d, %v; want the pid %d", tid, err, pid)
	}
	if !strings.HasSuffix(tg.loc.path, "python3.14") {
		t.Errorf("_PyRuntime found in %s", tg.loc.path)
	}
}

// Main thread parked in a system call: RemoteExecWait moves the request to the thread running bytecode.
func TestPEP768RemoteExecWaitBackgroundThread(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	p := pep768Start(t, py, "thread", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := RemoteExecWait(ctx, p.cmd.Process.Pid, p.script); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	pid, thread := p.waitMarker(t, 5*time.Second)
	if pid != p.cmd.Process.Pid || thread != "pm-worker" {
		t.Fatalf("script ran in pid %d thread %s; want pid %d pm-worker", pid, thread, p.cmd.Process.Pid)
	}
	if took > pep768MainGrace+2*time.Second {
		t.Fatalf("RemoteExecWait took %v", took)
	}
	// Exactly once: the main thread's withdrawn request must not run when it wakes and exits.
	b, _ := os.ReadFile(p.marker)
	if _, err := p.stdin.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if b2, _ := os.ReadFile(p.marker); string(b2) != string(b) {
		t.Fatalf("marker rewritten: %q then %q", b, b2)
	}
}

func TestPEP768RemoteExecWaitBusy(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	p := pep768Start(t, py, "busy", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := RemoteExecWait(ctx, p.cmd.Process.Pid, p.script); err != nil {
		t.Fatal(err)
	}
	if _, thread := p.waitMarker(t, 5*time.Second); thread != "MainThread" {
		t.Fatalf("ran on %s", thread)
	}
}

// No thread runs bytecode: the wait times out, the request is withdrawn and never runs later.
func TestPEP768RemoteExecWaitNotPickedUp(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	p := pep768Start(t, py, "blocked", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := RemoteExecWait(ctx, p.cmd.Process.Pid, p.script)
	if !errors.Is(err, ErrNotPickedUp) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrNotPickedUp", err)
	}
	tg, err := pep768Open(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := tg.mainOrHolder()
	if n, err := tg.pending(ts); err != nil || n != 0 {
		t.Fatalf("pending after withdrawal = %d, %v", n, err)
	}
	// Unblock the main thread: it runs bytecode again, and the withdrawn script must not run.
	if _, err := p.stdin.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if _, err := os.Stat(p.marker); err == nil {
		t.Fatal("a withdrawn request ran")
	}
}

func TestPEP768Disabled(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	for name, c := range map[string]struct {
		env  []string
		args []string
	}{
		"env": {env: []string{"PYTHON_DISABLE_REMOTE_DEBUG=1"}},
		"-X":  {args: []string{"-X", "disable-remote-debug"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := pep768Start(t, py, "sleep", c.env, c.args...)
			err := RemoteExec(p.cmd.Process.Pid, p.script)
			if !errors.Is(err, ErrRemoteDebugDisabled) {
				t.Fatalf("got %v, want ErrRemoteDebugDisabled", err)
			}
			if !strings.Contains(err.Error(), "PYTHON_DISABLE_REMOTE_DEBUG") {
				t.Errorf("error does not say what to do: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
			if _, err := os.Stat(p.marker); err == nil {
				t.Fatal("script ran in a target with remote debugging disabled")
			}
		})
	}
}

// Older interpreters: a *VersionError naming the version, so the caller can fall back.
func TestPEP768OldPython(t *testing.T) {
	for _, c := range []struct {
		py    string
		minor int
	}{
		{"/root/.pyenv/versions/3.12.1/bin/python", 12}, // no _Py_DebugOffsets
		{"/root/.pyenv/versions/3.13.0/bin/python", 13}, // _Py_DebugOffsets without debugger_support
	} {
		t.Run(fmt.Sprintf("3.%d", c.minor), func(t *testing.T) {
			py := pep768Require(t, "", c.py)
			p := pep768Start(t, py, "sleep", nil)
			err := RemoteExec(p.cmd.Process.Pid, p.script)
			var ve *VersionError
			if !errors.As(err, &ve) || !errors.Is(err, ErrPEP768Unsupported) {
				t.Fatalf("got %v, want a *VersionError", err)
			}
			if ve.Major != 3 || ve.Minor != c.minor {
				t.Fatalf("VersionError names %d.%d, want 3.%d: %v", ve.Major, ve.Minor, c.minor, err)
			}
			if major, minor, err := PythonVersion(p.cmd.Process.Pid); err != nil || major != 3 || minor != c.minor {
				t.Fatalf("PythonVersion = %d.%d, %v", major, minor, err)
			}
		})
	}
}

func TestPEP768NotPython(t *testing.T) {
	requirePrivileged(t)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := RemoteExec(cmd.Process.Pid, "/tmp/x.py"); !errors.Is(err, pyproc.ErrNotPython) {
		t.Fatalf("got %v, want ErrNotPython", err)
	}
}

// The target exits at each step of the request: an error saying so, promptly, never a hang.
func TestPEP768TargetExits(t *testing.T) {
	py := pep768Require(t, "PM_PYTHON314", "")
	for _, c := range []struct {
		step string
		reap bool // wait until reaped, or only until it is dead (zombie or reaped)
	}{
		{"located", true},
		{"offsets", false},
		{"path", true},
		{"pending", false},
	} {
		t.Run(fmt.Sprintf("%s/reap=%v", c.step, c.reap), func(t *testing.T) {
			p := pep768Start(t, py, "busy", nil)
			pep768StepHook = func(step string) {
				if step != c.step {
					return
				}
				_ = p.cmd.Process.Kill()
				if c.reap {
					<-p.done // pid gone
				} else {
					pep768WaitZombieOrGone(p.cmd.Process.Pid) // dead, maybe not reaped yet
				}
			}
			defer func() { pep768StepHook = nil }()
			res := make(chan error, 1)
			go func() { res <- RemoteExec(p.cmd.Process.Pid, p.script) }()
			select {
			case err := <-res:
				if !errors.Is(err, ErrTargetGone) {
					t.Fatalf("got %v, want ErrTargetGone", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("RemoteExec hangs when the target exits")
			}
		})
	}

	t.Run("while waiting", func(t *testing.T) {
		p := pep768Start(t, py, "blocked", nil)
		res := make(chan error, 1)
		go func() { res <- RemoteExecWait(context.Background(), p.cmd.Process.Pid, p.script) }()
		time.Sleep(100 * time.Millisecond)
		_ = p.cmd.Process.Kill()
		select {
		case err := <-res:
			if !errors.Is(err, ErrTargetGone) {
				t.Fatalf("got %v, want ErrTargetGone", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("RemoteExecWait hangs when the target exits")
		}
	})
}

// pep768WaitZombieOrGone waits until pid is a zombie or gone (SIGKILL is delivered asynchronously).
func pep768WaitZombieOrGone(pid int) {
	for i := 0; i < 500 && pep768Alive(pid) == nil; i++ {
		time.Sleep(2 * time.Millisecond)
	}
}
