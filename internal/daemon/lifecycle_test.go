package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/profilemate/profilemate-trace/export"
	"github.com/profilemate/profilemate-trace/internal/record"
	"github.com/profilemate/profilemate-trace/internal/ring"
)

var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
)

// buildCLI builds cmd/profilemate-trace: the lifecycle tests run the real daemon binary,
// so they cover whatever cmd wires in (the eBPF tracer, once it is wired).
func buildCLI(t testing.TB) string {
	t.Helper()
	cliOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pmcli")
		if err != nil {
			cliErr = err
			return
		}
		cliPath = filepath.Join(dir, "profilemate-trace")
		cmd := exec.Command("go", "build", "-o", cliPath, "./cmd/profilemate-trace")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("go build ./cmd/profilemate-trace: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// daemonProc is the daemon binary running as a child.
type daemonProc struct {
	cmd    *exec.Cmd
	cl     *Client
	dir    string
	bundle string
	sock   string
	log    string
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit status, valid after exited
}

func startDaemonProc(t *testing.T, dir string, args ...string) *daemonProc {
	t.Helper()
	bin := buildCLI(t)
	p := &daemonProc{dir: dir, bundle: filepath.Join(dir, "bundles"), sock: filepath.Join(dir, "api.sock"), log: filepath.Join(dir, "daemon.log"), exited: make(chan struct{})}
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, append([]string{"daemon", "--listen", "unix:" + p.sock, "--bundle-dir", p.bundle, "--scan-interval", "200ms"}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("daemon log:\n%s", b)
		}
	})
	p.cl = NewClient("unix:"+p.sock, "")
	waitFor(t, 10*time.Second, "the daemon binary to listen", func() bool {
		_, err := p.cl.List()
		return err == nil
	})
	return p
}

// uprobeEvents returns the kernel's list of tracefs uprobes, mounting tracefs if needed.
// ok is false when tracefs is unavailable.
func uprobeEvents(t *testing.T) (string, bool) {
	const p = "/sys/kernel/tracing/uprobe_events"
	if _, err := os.Stat(p); err != nil {
		syscall.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, "")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot read %s under CI (run as root with tracefs): %v", p, err)
		}
		t.Logf("not checking uprobe_events: %v", err)
		return "", false
	}
	return string(b), true
}

// probeFds counts the perf-event and BPF descriptors a process holds (its probes).
func probeFds(pid int) (perf, bpf int) {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		switch {
		case strings.Contains(l, "perf_event"):
			perf++
		case strings.Contains(l, "bpf"):
			bpf++
		}
	}
	return perf, bpf
}

// kernelProbes counts the BPF uprobe links in the whole kernel that filter on one of pids
// (uprobe_multi links carry the pid; the tracer attaches one per traced process).
func kernelProbes(t *testing.T, pids map[int]string) int {
	var it link.Iterator
	defer it.Close()
	n := 0
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Type != link.UprobeMultiType {
			continue
		}
		if um := info.UprobeMulti(); um != nil {
			if pid, ok := um.Pid(); ok {
				if _, ours := pids[int(pid)]; ours {
					n++
				}
			}
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("listing the kernel's BPF links: %v", err)
	}
	return n
}

func allEnabled(t testing.TB, rings map[int]string) bool {
	for _, p := range rings {
		if ringHeader(t, p).ControlEnable != 1 {
			return false
		}
	}
	return true
}

func written(t testing.TB, rings map[int]string) map[int]uint64 {
	out := map[int]uint64{}
	for pid, p := range rings {
		out[pid] = ringHeader(t, p).RecordsWritten
	}
	return out
}

// TestSIGTERMCleanup: SIGTERM during a capture ends it cleanly: the daemon exits 0, every
// ring is dormant (and acknowledged), the cut-short capture has a readable bundle, the
// socket is gone and no uprobe is left in the kernel.
func TestSIGTERMCleanup(t *testing.T) {
	f := startFake(t, "server", 2)
	before, haveTracefs := uprobeEvents(t)
	dp := startDaemonProc(t, shortTemp(t, "pmsig"))
	caps, err := dp.cl.Start(CaptureRequest{Pid: f.pid, Duration: json.RawMessage(`"60s"`)})
	if err != nil || len(caps) != 1 {
		t.Fatalf("start: %v %v", caps, err)
	}
	rings := f.rings()
	waitFor(t, 10*time.Second, "every ring enabled", func() bool { return allEnabled(t, rings) })
	perf, bpf := probeFds(dp.cmd.Process.Pid)
	var probes int
	waitFor(t, 5*time.Second, "uprobes on the targets (or none: a build without eBPF)", func() bool {
		probes = kernelProbes(t, rings)
		return probes >= len(rings) || bpf == 0
	})
	t.Logf("during the capture the daemon holds %d perf-event and %d BPF descriptors; the kernel has %d uprobe_multi links on the targets", perf, bpf, probes)
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	dp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dp.exited:
		if dp.err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v", dp.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("daemon still running 20 s after SIGTERM")
	}
	t.Logf("SIGTERM to exit: %.3f s", time.Since(t0).Seconds())
	for pid, p := range rings {
		h := ringHeader(t, p)
		if h.ControlEnable != 0 {
			t.Errorf("pid %d: ring left enabled (control_enable %d)", pid, h.ControlEnable)
		}
		if h.ControlAck != h.ControlSeq {
			t.Errorf("pid %d: the producer has not applied the last control change (seq %d ack %d)", pid, h.ControlSeq, h.ControlAck)
		}
		if !pidAlive(pid) {
			t.Errorf("pid %d died", pid)
		}
	}
	// Dormant means no more kernel records although the processes keep launching.
	time.Sleep(300 * time.Millisecond)
	w0 := written(t, rings)
	time.Sleep(700 * time.Millisecond)
	for pid, n := range written(t, rings) {
		if n > w0[pid]+2 {
			t.Errorf("pid %d still writes records after the daemon stopped (%d -> %d)", pid, w0[pid], n)
		}
	}
	b, err := os.ReadFile(filepath.Join(dp.bundle, caps[0].ID, indexFile))
	if err != nil {
		t.Fatal(err)
	}
	var c Capture
	json.Unmarshal(b, &c)
	if c.State != StateDone || c.Bundle == "" || !strings.Contains(c.Note, "cut short") {
		t.Fatalf("capture after SIGTERM: %+v", c)
	}
	s, err := export.Load(filepath.Join(dp.bundle, c.ID, c.Bundle))
	if err != nil {
		t.Fatalf("export.Load of the cut-short bundle: %v", err)
	}
	kernels := 0
	for _, st := range s.Streams {
		kernels += len(st.Kernels)
	}
	if kernels == 0 {
		t.Error("the cut-short bundle holds no kernel records")
	}
	if _, err := os.Lstat(dp.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind (%v)", dp.sock, err)
	}
	if haveTracefs {
		after, _ := uprobeEvents(t)
		if after != before {
			t.Errorf("uprobe_events changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	if n := kernelProbes(t, rings); n != 0 {
		t.Errorf("%d uprobe links on the targets left in the kernel after SIGTERM", n)
	}
}

// TestKill9Target: kill -9 of the daemon mid-capture leaves the targets running; their
// agents notice the stale heartbeat and go dormant on their own; a new daemon lists the
// capture as incomplete and captures the same tree again.
func TestKill9Target(t *testing.T) {
	const orphan = 2 * time.Second
	f := startFake(t, "server", 2, fmt.Sprintf("PROFILEMATE_ORPHAN_TIMEOUT=%g", orphan.Seconds()))
	before, haveTracefs := uprobeEvents(t)
	dir := shortTemp(t, "pmk9")
	dp := startDaemonProc(t, dir)
	caps, err := dp.cl.Start(CaptureRequest{Pid: f.pid, Duration: json.RawMessage(`"60s"`)})
	if err != nil || len(caps) != 1 {
		t.Fatalf("start: %v %v", caps, err)
	}
	rings := f.rings()
	waitFor(t, 10*time.Second, "every ring enabled", func() bool { return allEnabled(t, rings) })
	time.Sleep(time.Second) // mid-capture, records flowing
	w0 := written(t, rings)
	time.Sleep(300 * time.Millisecond)
	for pid, n := range written(t, rings) {
		if n <= w0[pid] {
			t.Fatalf("pid %d writes no records while enabled", pid)
		}
	}
	beats0 := map[int]int{}
	for pid := range rings {
		beats0[pid] = f.beats(pid)
	}
	probes := kernelProbes(t, rings)
	killed := time.Now()
	dp.cmd.Process.Signal(syscall.SIGKILL)
	<-dp.exited
	if n := kernelProbes(t, rings); n != 0 {
		t.Errorf("%d uprobe links on the targets left after kill -9 (%d before)", n, probes)
	}
	t.Logf("uprobe_multi links on the targets: %d before kill -9, 0 after", probes)
	// The agents go dormant after the orphan timeout.
	time.Sleep(orphan + time.Second)
	w1 := written(t, rings)
	time.Sleep(time.Second)
	w2 := written(t, rings)
	for pid := range rings {
		if !pidAlive(pid) {
			t.Fatalf("pid %d died after the daemon was killed", pid)
		}
		if f.beats(pid) < beats0[pid]+20 {
			t.Errorf("pid %d: only %d health beats in %.1f s after the kill (stuck?)", pid, f.beats(pid)-beats0[pid], time.Since(killed).Seconds())
		}
		if w2[pid] > w1[pid]+2 {
			t.Errorf("pid %d: still collecting %.1f s after its tracer died (%d -> %d records)", pid, time.Since(killed).Seconds(), w1[pid], w2[pid])
		}
	}
	if haveTracefs {
		if after, _ := uprobeEvents(t); after != before {
			t.Errorf("uprobe_events changed after kill -9:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
	// The agent says why it stopped: a control_change with reason orphan.
	for pid, p := range rings {
		r, err := ring.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		orphaned := false
		r.Read(func(rec []byte) error {
			if record.TypeOf(rec) == record.TypeControlChange {
				if cc, err := record.DecodeControlChange(rec); err == nil && cc.Enable == 0 && cc.Reason == 2 {
					orphaned = true
				}
			}
			return nil
		})
		r.Close()
		if !orphaned {
			t.Errorf("pid %d: no control_change(enable 0, reason orphan) in its ring", pid)
		}
	}
	// A new daemon on the same directory: the killed capture is listed as incomplete, and
	// the same tree can be captured again in full.
	td := runTestDaemon(t, Config{Listen: "unix:" + filepath.Join(dir, "api2.sock"), BundleDir: dp.bundle, Scan: 200 * time.Millisecond})
	old, err := td.cl.Get(caps[0].ID)
	if err != nil || old.State != StateIncomplete || old.Note == "" {
		t.Errorf("killed capture after restart: %+v %v", old, err)
	}
	c := td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "1s"}`, f.pid)).ID)
	if c.State != StateDone || len(c.Pids) != len(rings) || c.Records == 0 {
		t.Errorf("capture after the kill: %+v (want %d pids)", c, len(rings))
	}
	for pid, p := range rings {
		if ringHeader(t, p).ControlEnable != 0 {
			t.Errorf("pid %d enabled after the second capture", pid)
		}
	}
}
