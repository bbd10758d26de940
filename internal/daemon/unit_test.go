package daemon

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidateExposure(t *testing.T) {
	for _, tc := range []struct {
		listen, token string
		ok            bool
	}{
		{"unix:/run/x.sock", "", true},
		{"127.0.0.1:7450", "", true},
		{"[::1]:7450", "", true},
		{"localhost:7450", "", true},
		{"0.0.0.0:7450", "", false},
		{":7450", "", false}, // empty host listens everywhere
		{"10.1.2.3:7450", "", false},
		{"0.0.0.0:7450", "0123456789abcdef0123", true},
		{"0.0.0.0:7450", "short", false},
		{"unix:relative.sock", "", false},
		{"example.com:80", "", false},
	} {
		cfg := Config{Listen: tc.listen, Token: tc.token}
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("listen %q token %q: err = %v, want ok=%v", tc.listen, tc.token, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%q: error does not wrap ErrConfig: %v", tc.listen, err)
		}
	}
	cfg := Config{Listen: "0.0.0.0:1"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("exposed listener without token: %v; want a message naming --token-file", err)
	}
}

func TestValidateSchedule(t *testing.T) {
	for _, tc := range []struct {
		every, window time.Duration
		ok            bool
	}{
		{0, 0, true}, {30 * time.Minute, time.Minute, true}, {30 * time.Minute, 0, false},
		{0, time.Minute, false}, {time.Minute, time.Minute, false}, {3 * time.Hour, 2 * time.Hour, false},
	} {
		cfg := Config{Every: tc.every, Window: tc.window}
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("every %s window %s: %v", tc.every, tc.window, err)
		}
	}
}

func TestReadTokenMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(p, []byte("0123456789abcdef0123\n"), 0o644)
	if _, err := ReadToken(p); err == nil {
		t.Fatal("a world-readable token file was accepted")
	}
	os.Chmod(p, 0o600)
	tok, err := ReadToken(p)
	if err != nil || tok != "0123456789abcdef0123" {
		t.Fatalf("ReadToken = %q, %v", tok, err)
	}
}

func TestParseCgroup(t *testing.T) {
	for _, tc := range []struct{ in, uid, cid string }{
		{"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-" + strings.Repeat("ab", 32) + ".scope\n",
			"1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", strings.Repeat("ab", 32)},
		{"12:memory:/kubepods/besteffort/pod1b2c3d4e-aaaa-bbbb-cccc-0123456789ab/" + strings.Repeat("0f", 32) + "\n11:cpu:/kubepods/besteffort/pod1b2c3d4e-aaaa-bbbb-cccc-0123456789ab/" + strings.Repeat("0f", 32) + "\n",
			"1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", strings.Repeat("0f", 32)},
		{"0::/system.slice/docker-" + strings.Repeat("12", 32) + ".scope\n", "", strings.Repeat("12", 32)},
		{"0::/kubepods/pod1b2c3d4e-aaaa-bbbb-cccc-0123456789ab/crio-" + strings.Repeat("cd", 32) + "\n", "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", strings.Repeat("cd", 32)},
		{"0::/user.slice/user-0.slice/session-1.scope\n", "", ""},
		// seen from the daemon's own cgroup namespace (a private one by default on cgroup v2)
		{"0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-" + strings.Repeat("ef", 32) + ".scope\n",
			"1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", strings.Repeat("ef", 32)},
	} {
		p := parseCgroup([]byte(tc.in))
		if p.PodUID != tc.uid || p.ContainerID != tc.cid {
			t.Errorf("parseCgroup(%q) = uid %q cid %q; want %q %q", tc.in, p.PodUID, p.ContainerID, tc.uid, tc.cid)
		}
	}
}

func TestPodIndexAndAllowlist(t *testing.T) {
	dir := t.TempDir()
	uid := "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
	os.Mkdir(filepath.Join(dir, "ml-serving_vllm-llama-0_"+uid), 0o755)
	os.Mkdir(filepath.Join(dir, "not-a-pod-dir"), 0o755)
	idx := podIndex(dir)
	if got := idx[uid]; got != [2]string{"ml-serving", "vllm-llama-0"} {
		t.Fatalf("podIndex = %v", idx)
	}
	p := &Process{Pod: Pod{Namespace: "ml-serving", PodUID: uid, ContainerID: strings.Repeat("ab", 32), Cgroup: "/kubepods/x"}}
	for _, tc := range []struct {
		a  Allowlist
		ok bool
	}{
		{Allowlist{}, true},
		{Allowlist{Namespaces: []string{"ml-serving"}}, true},
		{Allowlist{Namespaces: []string{"other"}}, false},
		{Allowlist{Namespaces: []string{"ml-serving"}, Containers: []string{"abab"}}, true},
		{Allowlist{Namespaces: []string{"ml-serving"}, Containers: []string{"ffff"}}, false},
		{Allowlist{PodUIDs: []string{uid}}, true},
		{Allowlist{Cgroups: []string{"kubepods"}}, true},
		{Allowlist{Cgroups: []string{"system.slice"}}, false},
	} {
		if got := tc.a.allows(p); got != tc.ok {
			t.Errorf("%+v allows = %v, want %v", tc.a, got, tc.ok)
		}
	}
	// A process with no known namespace is refused by a namespace allowlist (fail closed).
	if (Allowlist{Namespaces: []string{"ml-serving"}}).allows(&Process{}) {
		t.Error("a process without a namespace passed a namespace allowlist")
	}
}

func TestLooksVllm(t *testing.T) {
	for _, tc := range []struct {
		comm string
		cmd  []string
		ok   bool
	}{
		{"vllm", []string{"/usr/bin/python3", "/usr/local/bin/vllm", "serve", "m"}, true},
		{"python3", []string{"python3", "-m", "vllm.entrypoints.openai.api_server"}, true},
		{"VLLM::EngineCor", nil, true},
		{"VLLM::Worker_TP", nil, true},
		{"python3", []string{"/usr/bin/python3", "-u", "/opt/fake_vllm.py", "--role", "solo"}, true},
		{"vllm", []string{"/usr/local/bin/vllm", "serve", "m"}, true},
		{"python3", []string{"python3", "train.py"}, false},
		{"python3", []string{"python3", "-m", "pip", "install", "vllm"}, false},
		{"pip", []string{"/usr/bin/python3", "/usr/bin/pip", "install", "vllm"}, false},
		{"bash", []string{"bash", "-c", "vllm serve m"}, false},
		{"python3", []string{"python3", "-c", "import vllm"}, false},
		{"grep", []string{"grep", "vllm"}, false},
		{"python3", []string{"python3", "-X", "faulthandler", "-m", "vllm.entrypoints.openai.api_server"}, true},
	} {
		if got := looksVllm(tc.comm, tc.cmd); got != tc.ok {
			t.Errorf("looksVllm(%q, %q) = %v", tc.comm, tc.cmd, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{`"60s"`, time.Minute, true}, {`90`, 90 * time.Second, true}, {`0.5`, 500 * time.Millisecond, true},
		{`"-5s"`, 0, false}, {`"soon"`, 0, false}, {`-1`, 0, false}, {`1e300`, 0, false}, {`true`, 0, false},
	} {
		d, err := parseDuration(json.RawMessage(tc.in))
		if (err == nil) != tc.ok || (tc.ok && d != tc.want) {
			t.Errorf("parseDuration(%s) = %v, %v", tc.in, d, err)
		}
	}
}

func TestIDShape(t *testing.T) {
	id := newID(time.Now())
	if !ValidID(id) {
		t.Fatalf("newID %q is not ValidID", id)
	}
	for _, bad := range []string{"", "..", "../x", "c20261127t101500-1a2b3c4d/..", "c20261127t101500-1A2B3C4D", "/etc/passwd"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}
