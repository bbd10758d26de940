package daemon

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/export"
)

// TestDiscovery: a vLLM-shaped tree is found with its roles and rings; a worker that dies
// disappears and a new server appears, without any request.
func TestDiscovery(t *testing.T) {
	f := startFake(t, "server", 2)
	td := newTestDaemon(t, nil)
	var byPid map[int]Process
	waitFor(t, 10*time.Second, "the fake tree in GET /processes with its roles", func() bool {
		ps, err := td.cl.Processes()
		if err != nil {
			t.Fatal(err)
		}
		byPid = map[int]Process{}
		roles := map[string]int{}
		for _, p := range ps {
			if p.Root == f.pid {
				byPid[p.Pid] = p
				roles[p.Role]++
			}
		}
		return roles["server"] == 1 && roles["engine-core"] == 1 && roles["worker"] == 2
	})
	for pid := range f.rings() {
		p, ok := byPid[pid]
		if !ok || !p.Agent {
			t.Errorf("pid %d holds an agent ring but is listed as %+v", pid, p)
		}
	}
	var worker int
	for pid, p := range byPid {
		if p.Role == "worker" {
			worker = pid
		}
	}
	if err := syscall.Kill(worker, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the killed worker to leave GET /processes", func() bool {
		ps, _ := td.cl.Processes()
		for _, p := range ps {
			if p.Pid == worker {
				return false
			}
		}
		return true
	})
	g := startFake(t, "solo", 0)
	waitFor(t, 5*time.Second, "a new server to appear", func() bool {
		ps, _ := td.cl.Processes()
		for _, p := range ps {
			if p.Pid == g.pid && p.Root == g.pid && p.Agent {
				return true
			}
		}
		return false
	})
	if n := td.metric(t, `profilemate_daemon_process_events_total{event="exited"}`); n < 1 {
		t.Errorf("process_events_total{exited} = %v", n)
	}
}

// TestCaptureEndToEnd: trigger, bundle written privately, downloadable, readable by
// export.Load with every process of the tree, rings back to dormant afterwards.
func TestCaptureEndToEnd(t *testing.T) {
	f := startFake(t, "server", 2)
	td := newTestDaemon(t, nil)
	c := td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "1.5s", "detail": "graph", "label": "e2e"}`, f.pid))
	if c.State != StateRunning || c.Pid != f.pid || c.Label != "e2e" {
		t.Fatalf("POST returned %+v", c)
	}
	rings := f.rings()
	waitFor(t, 5*time.Second, "every ring enabled", func() bool {
		for _, p := range rings {
			if ringHeader(t, p).ControlEnable != 1 {
				return false
			}
		}
		return true
	})
	c = td.wait(t, c.ID)
	if c.State != StateDone || c.Bundle == "" || c.Records == 0 {
		t.Fatalf("capture ended as %+v", c)
	}
	for pid, p := range rings {
		if h := ringHeader(t, p); h.ControlEnable != 0 {
			t.Errorf("pid %d: ring still enabled after the capture (control_enable %d)", pid, h.ControlEnable)
		}
	}
	// Private files, and only the bundle and the index left in the capture's directory.
	dir := filepath.Join(td.cfg.BundleDir, c.ID)
	for _, p := range []string{td.cfg.BundleDir, dir} {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %04o, want 0700", p, st.Mode().Perm())
		}
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
		st, _ := os.Stat(filepath.Join(dir, e.Name()))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", e.Name(), st.Mode().Perm())
		}
	}
	sort.Strings(names)
	if len(names) != 2 || names[0] != indexFile || names[1] != c.Bundle {
		t.Errorf("capture directory holds %v; want the index and the bundle", names)
	}
	// Download and read it back with export.
	out := filepath.Join(t.TempDir(), "dl.tar.zst")
	n, err := td.cl.Download(c.ID, out)
	if err != nil || n != c.BundleBytes {
		t.Fatalf("download: %d bytes, %v (index says %d)", n, err, c.BundleBytes)
	}
	s, err := export.Load(out)
	if err != nil {
		t.Fatalf("export.Load: %v", err)
	}
	pids := map[int]bool{}
	for _, st := range s.Streams {
		if st.Meta.Source == "cupti" && len(st.Kernels) > 0 {
			pids[st.Meta.Pid] = true
		}
	}
	for pid := range rings {
		if !pids[pid] {
			t.Errorf("bundle has no cupti kernel records of pid %d (only of %v)", pid, pids)
		}
	}
	if s.Metadata["mode"] != "daemon" {
		t.Errorf("metadata mode %v, want daemon", s.Metadata["mode"])
	}
	list, err := td.cl.List()
	if err != nil || len(list) != 1 || list[0].ID != c.ID {
		t.Errorf("GET /captures = %+v, %v", list, err)
	}
	if v := td.metric(t, `profilemate_daemon_captures_total{result="done"}`); v != 1 {
		t.Errorf("captures_total{done} = %v", v)
	}
	if v := td.metric(t, "profilemate_daemon_bundle_bytes_total"); v != float64(c.BundleBytes) {
		t.Errorf("bundle_bytes_total = %v, want %d", v, c.BundleBytes)
	}
	t.Logf("capture %s: %d streams, %d records, bundle %d bytes, stop to bundle %.3f s (agent: %v)", c.ID, c.Streams, c.Records, c.BundleBytes, c.StopToBundleSec, agentSO != "")
}

// TestConcurrentTriggers: two requests for one tree at once: one runs, one is refused with
// 409 naming the capture in the way; a request for a worker of the busy tree too.
func TestConcurrentTriggers(t *testing.T) {
	f := startFake(t, "server", 1)
	td := newTestDaemon(t, nil)
	body := fmt.Sprintf(`{"pid": %d, "duration": "2s"}`, f.pid)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	msgs := make([]string, 2)
	ids := make([]string, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, cr, msg := td.post(t, body)
			codes[i], msgs[i] = code, msg
			if len(cr.Captures) == 1 {
				ids[i] = cr.Captures[0].ID
			}
		}()
	}
	wg.Wait()
	sort.Sort(byCode{codes, msgs, ids})
	if codes[0] != 202 || codes[1] != 409 {
		t.Fatalf("concurrent triggers: %v %q", codes, msgs)
	}
	if !strings.Contains(msgs[1], "already being captured by "+ids[0]) {
		t.Errorf("409 message %q does not name the running capture %s", msgs[1], ids[0])
	}
	var worker int
	for pid := range f.rings() {
		if pid != f.pid {
			worker = pid
		}
	}
	code, _, msg := td.post(t, fmt.Sprintf(`{"pid": %d, "duration": "1s"}`, worker))
	if code != 409 {
		t.Errorf("a worker of the busy tree: %d %q, want 409", code, msg)
	}
	resp, err := td.raw("GET", "/captures/"+ids[0]+"/bundle", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 409 {
		t.Errorf("bundle of a running capture: %d, want 409", resp.StatusCode)
	}
	if err := td.cl.Delete(ids[0]); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("delete of a running capture: %v", err)
	}
	c := td.wait(t, ids[0])
	if c.State != StateDone {
		t.Fatalf("the capture that ran: %+v", c)
	}
	// Free again.
	c2 := td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "300ms"}`, worker))
	if c2 = td.wait(t, c2.ID); c2.State != StateDone {
		t.Errorf("capture after the busy one: %+v", c2)
	}
	if v := td.metric(t, `profilemate_daemon_captures_total{result="refused_busy"}`); v != 2 {
		t.Errorf("captures_total{refused_busy} = %v, want 2", v)
	}
}

type byCode struct {
	c    []int
	m, i []string
}

func (b byCode) Len() int           { return len(b.c) }
func (b byCode) Less(i, j int) bool { return b.c[i] < b.c[j] }
func (b byCode) Swap(i, j int) {
	b.c[i], b.c[j] = b.c[j], b.c[i]
	b.m[i], b.m[j] = b.m[j], b.m[i]
	b.i[i], b.i[j] = b.i[j], b.i[i]
}

// TestRetention: the oldest captures go when the directory outgrows --retain-size, and
// captures older than --retain-age go too.
func TestRetention(t *testing.T) {
	f := startFake(t, "solo", 0)
	td := newTestDaemon(t, nil)
	first := td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "400ms"}`, f.pid)).ID)
	size := first.DiskBytes
	if size == 0 {
		t.Fatalf("first capture: %+v", first)
	}
	td.stop()
	// Room for about two captures of this size.
	cfg := td.cfg
	cfg.RetainSize = size*2 + size/2
	td = runTestDaemon(t, cfg)
	var ids []string
	for range 3 {
		c := td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "400ms"}`, f.pid)).ID)
		ids = append(ids, c.ID)
	}
	list, _ := td.cl.List()
	var kept []string
	var total int64
	for _, c := range list {
		kept = append(kept, c.ID)
		total += c.DiskBytes
	}
	if total > cfg.RetainSize {
		t.Errorf("captures hold %d bytes, limit %d", total, cfg.RetainSize)
	}
	// The newest ones are kept, the oldest removed (sizes vary a little with timing).
	if len(kept) == 0 || len(kept) == 3 {
		t.Fatalf("kept %v of %v", kept, ids)
	}
	for i, id := range kept {
		if id != ids[len(ids)-1-i] {
			t.Errorf("kept %v; want the newest of %v", kept, ids)
		}
	}
	removed := []string{first.ID}
	removed = append(removed, ids[:3-len(kept)]...)
	for _, id := range removed {
		if _, err := os.Stat(filepath.Join(cfg.BundleDir, id)); !os.IsNotExist(err) {
			t.Errorf("removed capture %s still on disk (%v)", id, err)
		}
		resp, _ := td.raw("GET", "/captures/"+id, "", nil)
		if resp.StatusCode != 404 {
			t.Errorf("GET removed capture: %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
	if v := td.metric(t, `profilemate_daemon_retention_deleted_total{reason="size"}`); v != float64(len(removed)) {
		t.Errorf("retention_deleted_total{size} = %v, want %d", v, len(removed))
	}
	td.stop()
	// Age: a daemon started with a 1 s limit removes them at start.
	time.Sleep(1100 * time.Millisecond)
	cfg.RetainAge = time.Second
	td = runTestDaemon(t, cfg)
	if list, _ := td.cl.List(); len(list) != 0 {
		t.Errorf("captures older than --retain-age kept: %d", len(list))
	}
	if v := td.metric(t, `profilemate_daemon_retention_deleted_total{reason="age"}`); v != float64(len(kept)) {
		t.Errorf("retention_deleted_total{age} = %v", v)
	}
}

// TestBadInput: every bad request gets a 4xx with a message, and the daemon keeps serving.
func TestBadInput(t *testing.T) {
	f := startFake(t, "solo", 0)
	td := newTestDaemon(t, nil)
	outside := filepath.Join(filepath.Dir(td.cfg.BundleDir), "escaped")
	unknown := 4194000
	for syscall.Kill(unknown, 0) == nil {
		unknown--
	}
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"malformed", `{"pid": `, 400, "malformed JSON"},
		{"not an object", `[1,2]`, 400, "malformed JSON"},
		{"two objects", `{"pid": 1}{"pid": 2}`, 400, "more than one"},
		{"unknown field", `{"pid": 1, "path": "/etc"}`, 400, "unknown field"},
		{"no target", `{"duration": "1s"}`, 400, "exactly one"},
		{"two targets", fmt.Sprintf(`{"pid": %d, "all": true}`, f.pid), 400, "exactly one"},
		{"empty selector", `{"selector": {}}`, 400, "all"},
		{"huge duration", fmt.Sprintf(`{"pid": %d, "duration": "100000h"}`, f.pid), 400, "--max-duration"},
		{"huge number", fmt.Sprintf(`{"pid": %d, "duration": 1e12}`, f.pid), 400, "out of range"},
		{"negative duration", fmt.Sprintf(`{"pid": %d, "duration": "-5s"}`, f.pid), 400, "positive"},
		{"tiny duration", fmt.Sprintf(`{"pid": %d, "duration": "1ms"}`, f.pid), 400, "too short"},
		{"bad duration", fmt.Sprintf(`{"pid": %d, "duration": "soon"}`, f.pid), 400, "not a duration"},
		{"bad detail", fmt.Sprintf(`{"pid": %d, "detail": "everything"}`, f.pid), 400, "detail"},
		{"negative pid", `{"pid": -4}`, 400, "out of range"},
		{"pid out of range", `{"pid": 99999999}`, 400, "out of range"},
		{"unknown pid", fmt.Sprintf(`{"pid": %d}`, unknown), 404, "no such process"},
		{"not vllm", fmt.Sprintf(`{"pid": %d}`, os.Getpid()), 422, "not a vLLM process"},
		{"pid 1", `{"pid": 1}`, 422, "not a vLLM process"},
		{"no match", `{"selector": {"namespace": "nope"}}`, 404, "matches"},
		{"label traversal", fmt.Sprintf(`{"pid": %d, "label": "../../escaped\n"}`, f.pid), 400, "printable"},
		{"long label", fmt.Sprintf(`{"pid": %d, "label": "%s"}`, f.pid, strings.Repeat("x", 200)), 400, "label"},
		{"huge body", fmt.Sprintf(`{"pid": %d, "label": "%s"}`, f.pid, strings.Repeat("x", 70000)), 413, "over"},
	} {
		code, _, msg := td.post(t, tc.body)
		if code != tc.code || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q; want %d containing %q", tc.name, code, msg, tc.code, tc.want)
		}
	}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		body         string
		code         int
	}{
		{"GET", "/captures/..%2f..%2fescaped", nil, "", 400},
		{"GET", "/captures/%2e%2e/bundle", nil, "", 400},
		{"GET", "/captures/c20261127t101500-1a2b3c4d", nil, "", 404},
		{"GET", "/captures/c20261127t101500-1a2b3c4d/bundle", nil, "", 404},
		{"GET", "/captures/..%2F..%2F..%2Fetc%2Fpasswd/bundle", nil, "", 400},
		{"DELETE", "/captures/..%2f..%2fescaped", nil, "", 400},
		{"DELETE", "/captures/c20261127t101500-1a2b3c4d", nil, "", 404},
		{"POST", "/captures/c20261127t101500-1a2b3c4d/stop", nil, "", 404},
		{"DELETE", "/captures", nil, "", 405},
		{"POST", "/captures", map[string]string{"Content-Type": "text/plain"}, `{"pid": 1}`, 415},
		{"GET", "/nope", nil, "", 404},
	} {
		resp, err := td.raw(tc.method, tc.path, tc.body, tc.hdr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d %s; want %d", tc.method, tc.path, resp.StatusCode, b, tc.code)
		}
	}
	if _, err := os.Stat(outside); !os.IsNotExist(err) {
		t.Errorf("something was written outside the bundle directory: %v", err)
	}
	// Still serving, and a good request still works.
	c := td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": 0.3, "label": "after bad input"}`, f.pid)).ID)
	if c.State != StateDone {
		t.Fatalf("capture after bad input: %+v", c)
	}
}

// TestToken: an exposed listener needs the token; a wrong or missing one gets 401.
func TestToken(t *testing.T) {
	tok := "s3cret-token-0123456789"
	td := newTestDaemon(t, func(c *Config) { c.Listen = freePort(t); c.Token = tok })
	for _, tc := range []struct {
		hdr  map[string]string
		code int
	}{
		{nil, 401},
		{map[string]string{"Authorization": "Bearer wrong-token-0123456789"}, 401},
		{map[string]string{"Authorization": tok}, 401},
		{map[string]string{"Authorization": "Bearer " + tok}, 200},
	} {
		req, _ := http.NewRequest("GET", "http://"+td.cfg.Listen+"/captures", nil)
		for k, v := range tc.hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("headers %v: %d, want %d", tc.hdr, resp.StatusCode, tc.code)
		}
	}
	if _, err := td.cl.List(); err != nil {
		t.Errorf("client with the token: %v", err)
	}
}

// TestSchedule: --every/--window start windows on every vLLM tree by themselves. The daemon
// is limited to the fake's own namespace: a schedule takes every vLLM process of the host,
// and the tests of other packages run theirs beside this one (the real-vLLM attach tests of
// cmd/profilemate-trace lost records to this test's windows before rings had one reader).
func TestSchedule(t *testing.T) {
	ns := fmt.Sprintf("pm-schedule-%d", os.Getpid())
	f := startFake(t, "solo", 0, "POD_NAMESPACE="+ns, "POD_NAME=vllm-0")
	td := newTestDaemon(t, func(c *Config) {
		c.Every = 1500 * time.Millisecond
		c.Window = 300 * time.Millisecond
		c.Allow.Namespaces = []string{ns}
	})
	var got Capture
	waitFor(t, 10*time.Second, "a scheduled capture of the fake server to finish", func() bool {
		list, _ := td.cl.List()
		for _, c := range list {
			if c.Trigger == "schedule" && c.Pid == f.pid && c.State == StateDone {
				got = c
				return true
			}
		}
		return false
	})
	if got.DurationSec != 0.3 || got.Records == 0 {
		t.Errorf("scheduled capture %+v", got)
	}
}

// TestAllowlist: with --allow-namespace, processes of other namespaces are neither listed
// nor captured (the namespace here comes from the pod's POD_NAMESPACE, as vllm-example.yaml
// sets it; TestPodIndexAndAllowlist covers the /var/log/pods mapping).
func TestAllowlist(t *testing.T) {
	in := startFake(t, "solo", 0, "POD_NAMESPACE=ml-serving", "POD_NAME=vllm-0")
	out := startFake(t, "solo", 0, "POD_NAMESPACE=other", "POD_NAME=x")
	none := startFake(t, "solo", 0)
	td := newTestDaemon(t, func(c *Config) { c.Allow.Namespaces = []string{"ml-serving"} })
	ps, _ := td.cl.Processes()
	var listed []int
	for _, p := range ps {
		listed = append(listed, p.Pid)
		if p.Namespace != "ml-serving" {
			t.Errorf("listed outside the allowlist: %+v", p)
		}
	}
	if len(listed) != 1 || listed[0] != in.pid {
		t.Errorf("listed %v, want only %d", listed, in.pid)
	}
	for _, pid := range []int{out.pid, none.pid} {
		code, _, msg := td.post(t, fmt.Sprintf(`{"pid": %d, "duration": "300ms"}`, pid))
		if code != 403 || !strings.Contains(msg, "allowlist") {
			t.Errorf("pid %d outside the allowlist: %d %q", pid, code, msg)
		}
	}
	code, cr, msg := td.post(t, `{"selector": {"namespace": "ml-serving", "pod": "vllm-0"}, "duration": "300ms"}`)
	if code != 202 || len(cr.Captures) != 1 || cr.Captures[0].Pid != in.pid || cr.Captures[0].Namespace != "ml-serving" {
		t.Fatalf("selector capture: %d %+v %q", code, cr, msg)
	}
	if c := td.wait(t, cr.Captures[0].ID); c.State != StateDone || c.PodName != "vllm-0" {
		t.Errorf("%+v", c)
	}
}

// TestMaxRunning: beyond --max-running, a request gets 429 with Retry-After.
func TestMaxRunning(t *testing.T) {
	a := startFake(t, "solo", 0)
	b := startFake(t, "solo", 0)
	td := newTestDaemon(t, func(c *Config) { c.MaxRunning = 1 })
	first := td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "1500ms"}`, a.pid))
	resp, err := td.raw("POST", "/captures", fmt.Sprintf(`{"pid": %d, "duration": "1s"}`, b.pid), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "--max-running") {
		t.Errorf("over the limit: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	td.wait(t, first.ID)
	if c := td.wait(t, td.capture(t, fmt.Sprintf(`{"pid": %d, "duration": "300ms"}`, b.pid)).ID); c.State != StateDone {
		t.Errorf("after the first ended: %+v", c)
	}
}
