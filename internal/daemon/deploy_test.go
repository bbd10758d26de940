package daemon

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The deploy/ files: Kubernetes manifests, the agent installer and the documented way to
// give vLLM pods the agent and the hook.

var deployDir = filepath.Join(repoRoot, "deploy")

func manifests(t *testing.T) []string {
	m, _ := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	if len(m) < 3 {
		t.Fatalf("deploy/kubernetes holds %v", m)
	}
	return m
}

// TestDeployManifestsValid validates every manifest against the Kubernetes OpenAPI schemas
// shipped inside the kubernetes-validate package (offline: no schema download), in strict
// mode (unknown fields are errors), for the oldest and newest supported versions.
func TestDeployManifestsValid(t *testing.T) {
	kv, err := exec.LookPath("kubernetes-validate")
	if err != nil {
		t.Fatal("kubernetes-validate not found: pip install kubernetes-validate==1.37.0 (PyPI; it ships the schemas)")
	}
	files := manifests(t)
	for _, ver := range []string{"1.30.0", "1.37.0"} {
		out, err := exec.Command(kv, append([]string{"--strict", "-k", ver}, files...)...).CombinedOutput()
		if err != nil {
			t.Errorf("kubernetes-validate -k %s: %v\n%s", ver, err, out)
		}
		if n := bytes.Count(out, []byte(" passed for resource ")); n < 5 {
			t.Errorf("kubernetes-validate -k %s validated %d resources:\n%s", ver, n, out)
		}
	}
	// The validator must catch what we would get wrong: a misspelt field, a wrong type.
	b, _ := os.ReadFile(filepath.Join(deployDir, "kubernetes", "daemonset.yaml"))
	for _, bad := range []string{
		strings.Replace(string(b), "hostPID: true", "hostPid: true", 1),
		strings.Replace(string(b), "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: forty", 1),
	} {
		p := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(p, []byte(bad), 0o600)
		if out, err := exec.Command(kv, "--strict", p).CombinedOutput(); err == nil {
			t.Errorf("kubernetes-validate accepted a broken manifest:\n%s", out)
		}
	}
}

// TestDeployFlagsExist: every daemon flag the manifests use (or suggest in comments) exists.
func TestDeployFlagsExist(t *testing.T) {
	help, err := exec.Command(buildCLI(t), "daemon", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("daemon --help: %v\n%s", err, help)
	}
	re := regexp.MustCompile(`(?m)^\s*#?\s*- (--[a-z-]+)`)
	seen := 0
	for _, f := range manifests(t) {
		b, _ := os.ReadFile(f)
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen++
			if !bytes.Contains(help, []byte(m[1]+" ")) {
				t.Errorf("%s: flag %s is not a daemon flag", filepath.Base(f), m[1])
			}
		}
	}
	if seen < 8 {
		t.Errorf("found only %d flags in the manifests", seen)
	}
}

// TestAgentInstallLayout installs this checkout's agent and hook with install-agent.sh the way
// the init container does, then starts python the way vllm-example.yaml does (LD_PRELOAD,
// PYTHONPATH into <dir>/current): the hook announces itself and the agent arms CUDA
// injection. A second install with new content keeps the old release (still mapped by running
// pods) and moves current.
func TestAgentInstallLayout(t *testing.T) {
	if agentSO == "" {
		t.Fatal("cupti/build/libprofilemate.so is missing (make -C cupti)")
	}
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "lib"), 0o755)
	copyFile(t, agentSO, filepath.Join(src, "lib/libprofilemate.so"))
	if out, err := exec.Command("cp", "-R", filepath.Join(repoRoot, "pyhook"), filepath.Join(src, "pyhook")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	host := filepath.Join(t.TempDir(), "opt-profilemate-trace")
	install := func() {
		cmd := exec.Command("sh", filepath.Join(deployDir, "install-agent.sh"), host)
		cmd.Env = append(os.Environ(), "PROFILEMATE_SRC="+src)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("install-agent.sh: %v\n%s", err, out)
		}
	}
	install()
	// The paths of vllm-example.yaml, with the host directory mounted at /opt/profilemate-trace.
	ex, _ := os.ReadFile(filepath.Join(deployDir, "kubernetes", "vllm-example.yaml"))
	env := map[string]string{}
	for _, k := range []string{"LD_PRELOAD", "PYTHONPATH"} {
		m := regexp.MustCompile(`- name: ` + k + `\n\s+value: (\S+)`).FindSubmatch(ex)
		if m == nil {
			t.Fatalf("vllm-example.yaml sets no %s", k)
		}
		env[k] = strings.Replace(string(m[1]), "/opt/profilemate-trace", host, 1)
	}
	cmd := exec.Command("python3", "-c", "import os; print('CUDA_INJECTION64_PATH=' + os.environ.get('CUDA_INJECTION64_PATH', ''))")
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+env["LD_PRELOAD"], "PYTHONPATH="+env["PYTHONPATH"])
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("python with the documented env: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "[sitecustomize] vLLM Comprehensive Instrumentation Loaded") {
		t.Errorf("the hook did not announce itself; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stdout.String(), "CUDA_INJECTION64_PATH="+host) || strings.Contains(stderr.String(), "cannot be preloaded") {
		t.Errorf("the agent did not arm CUDA injection from the installed path: %q %q", stdout.String(), stderr.String())
	}
	first, _ := os.Readlink(filepath.Join(host, "current"))
	// New content: a new release, the old one kept.
	os.WriteFile(filepath.Join(src, "pyhook", "NEW"), []byte("x"), 0o644)
	install()
	second, _ := os.Readlink(filepath.Join(host, "current"))
	if first == second || !strings.HasPrefix(second, "releases/") {
		t.Errorf("current %q -> %q after an upgrade", first, second)
	}
	if _, err := os.Stat(filepath.Join(host, first, "lib/libprofilemate.so")); err != nil {
		t.Errorf("the previous release was removed: %v", err)
	}
	// The Dockerfile puts the files where install-agent.sh reads them.
	df, _ := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	for _, want := range []string{"/opt/profilemate-trace/lib/libprofilemate.so", "/opt/profilemate-trace/pyhook/sitecustomize.py",
		"/opt/profilemate-trace/pyhook/profilemate_trace/", "deploy/install-agent.sh /usr/local/bin/profilemate-install-agent"} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile does not mention %s", want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
