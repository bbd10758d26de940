//go:build linux && amd64

package inject

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pyTarget: the main thread reads commands from stdin, a worker sleeps in 5 ms steps and one
// waits on a queue (futex): the shapes of a serving CPython process between requests.
const pyTarget = `
import os, queue, sys, threading, time
n = [0, 0]
q = queue.Queue()
def sleeper():
    while True:
        time.sleep(0.005); n[0] += 1
def waiter():
    while True:
        try: q.get(timeout=0.05)
        except queue.Empty: pass
        n[1] += 1
for f in (sleeper, waiter):
    threading.Thread(target=f, daemon=True).start()
print("READY", os.getpid(), flush=True)
for line in sys.stdin:
    if line.strip() == "ping":
        print("pong", 0, n[0], n[1], flush=True)
`

func pythonsForTest(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, v := range []string{"3.10.13", "3.11.7", "3.12.1", "3.13.0"} {
		p := filepath.Join(os.Getenv("HOME"), ".pyenv/versions", v, "bin/python")
		if _, err := os.Stat(p); err == nil {
			out[v] = p
		}
	}
	if len(out) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("no CPython 3.10-3.13 under ~/.pyenv/versions (CI installs them)")
		}
		t.Skip("no CPython 3.10-3.13 under ~/.pyenv/versions")
	}
	return out
}

// The engine alone (stand-in agent) in CPython 3.10-3.13: the interpreter's threads keep
// running, and the one used goes back to its wait.
func TestRemoteCallIntoPython(t *testing.T) {
	requirePrivileged(t)
	lib, _ := built(t)
	for v, py := range pythonsForTest(t) {
		t.Run(v, func(t *testing.T) {
			p := start(t, py, "-c", pyTarget)
			before := p.ping(t)
			conf := writeConf(t)
			res, err := ptraceLoad(context.Background(), loadRequest{pid: p.pid, lib: lib, conf: conf, libInode: inode(t, lib), safePointWait: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if c := calls(t, conf); len(c) != 1 || c[0][0] != p.pid || c[0][1] != res.Tid {
				t.Errorf("calls %v, want one on pid %d thread %d", c, p.pid, res.Tid)
			}
			if tr := tracerPids(p.pid); len(tr) > 0 {
				t.Errorf("still traced: %v", tr)
			}
			time.Sleep(200 * time.Millisecond)
			after := p.ping(t)
			for i := 1; i < len(after); i++ {
				if after[i] <= before[i] {
					t.Errorf("thread %d of the interpreter stuck (%v -> %v) after using thread %d (%s)", i, before, after, res.Tid, res.Syscall)
				}
			}
		})
	}
}

// Staging: D in the target's /tmp, 0700, owned by the target's uid, with the agent, the hook
// package (no caches, no tests) and inject.conf; Remove takes it all away.
func TestStage(t *testing.T) {
	requirePrivileged(t)
	lib, target := built(t)
	p := start(t, target, "parked")
	hook := t.TempDir()
	os.MkdirAll(filepath.Join(hook, "profilemate_trace", "__pycache__"), 0o755)
	os.MkdirAll(filepath.Join(hook, "profilemate_trace", "patches"), 0o755)
	os.WriteFile(filepath.Join(hook, "profilemate_trace", "__init__.py"), []byte("x = 1\n"), 0o644)
	os.WriteFile(filepath.Join(hook, "profilemate_trace", "patches", "a.py"), []byte("y = 2\n"), 0o644)
	os.WriteFile(filepath.Join(hook, "profilemate_trace", "__pycache__", "a.pyc"), []byte("z"), 0o644)
	st, err := Stage(p.pid, StageConfig{Agent: lib, PyHook: hook, PyhookFromAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	host := "/proc/" + itoa(p.pid) + "/root" + st.Dir
	fi, err := os.Stat(host)
	if err != nil || fi.Mode().Perm() != 0o700 || !strings.HasPrefix(filepath.Base(st.Dir), stagePrefix+itoa(p.pid)+"-") {
		t.Fatalf("staging dir %s: %v %v", st.Dir, fi, err)
	}
	for _, f := range []string{agentName, "inject.conf", "inject.log", "pyhook/profilemate_trace/__init__.py", "pyhook/profilemate_trace/patches/a.py"} {
		if _, err := os.Stat(filepath.Join(host, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(host, "pyhook/profilemate_trace/__pycache__")); err == nil {
		t.Error("__pycache__ copied")
	}
	conf, _ := os.ReadFile(filepath.Join(host, "inject.conf"))
	for _, want := range []string{"pyhook_dir=" + st.Dir + "/pyhook\n", "pyhook_from_agent=1\n", "log=" + st.Dir + "/inject.log\n", "start=none\n", "orphan_timeout_s=30\n"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("inject.conf lacks %q:\n%s", want, conf)
		}
	}
	if err := st.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(host); !os.IsNotExist(err) {
		t.Errorf("staging dir still there: %v", err)
	}
	if err := st.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// The staging is handed to the target's effective uid and gid.
func TestStageOwnedByTarget(t *testing.T) {
	requirePrivileged(t)
	lib, _ := built(t)
	p := startAs(t, 65534, 65534, "/bin/sleep", "60")
	st, err := Stage(p, StageConfig{Agent: lib})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Remove()
	for _, f := range []string{"", agentName, "inject.conf"} {
		uid, gid := owner(t, filepath.Join("/proc", itoa(p), "root", st.Dir, f))
		if uid != 65534 || gid != 65534 {
			t.Errorf("%s/%s owned by %d:%d, want 65534:65534", st.Dir, f, uid, gid)
		}
	}
}
