//go:build linux

package cupti

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// fetchWheels downloads the CUPTI/runtime wheels (make -C cupti .cache/stamp).
// Without pip or network the test fails under CI=true and skips otherwise.
func fetchWheels(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	out, err := exec.Command("make", "-s", "-C", wd, ".cache/stamp").CombinedOutput()
	if err != nil {
		msg := "cannot download the CUPTI wheels (pip/network): " + strings.TrimSpace(string(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return filepath.Join(wd, ".cache")
}

// TestABIAgainstRealHeaders compiles testdata/abi_check.c against the real
// CUDA 12.9 and 13.0 CUPTI headers: every declared offset, enum and cbid must match.
func TestABIAgainstRealHeaders(t *testing.T) {
	fetchWheels(t)
	wd, _ := os.Getwd()
	out, err := exec.Command("make", "-s", "-C", wd, "abi-check").CombinedOutput()
	if err != nil {
		t.Fatalf("declared CUPTI ABI differs from the real headers:\n%s", out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// agentSymbols lists every cupti* entry point the agent resolves with dlsym.
func agentSymbols(t *testing.T) (required, optional []string) {
	src, err := os.ReadFile("csrc/pm_agent.c")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`SYM\(\w+, "(\w+)", ([01])\)`)
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		if m[2] == "1" {
			required = append(required, m[1])
		} else {
			optional = append(optional, m[1])
		}
	}
	if len(required) < 8 {
		t.Fatalf("found only %d required symbols in pm_agent.c", len(required))
	}
	return required, append(optional, "InitializeInjectionNvtx2")
}

func dynSymbols(t *testing.T, lib string) map[string]bool {
	out, err := exec.Command("nm", "-D", "--defined-only", lib).Output()
	if err != nil {
		t.Fatalf("nm -D %s: %v", lib, err)
	}
	syms := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			syms[strings.SplitN(f[2], "@", 2)[0]] = true
		}
	}
	return syms
}

// TestRealLibcuptiExportsAgentSymbols checks with nm -D that the real
// libcupti.so.12 (12.9) and .so.13 (13.0) export every symbol the agent uses
// (dlopen is not used: it may fail without a libcuda on this machine).
func TestRealLibcuptiExportsAgentSymbols(t *testing.T) {
	cache := fetchWheels(t)
	req, opt := agentSymbols(t)
	for _, lib := range []string{
		filepath.Join(cache, "cu12/nvidia/cuda_cupti/lib/libcupti.so.12"),
		filepath.Join(cache, "cu13/nvidia/cu13/lib/libcupti.so.13"),
	} {
		syms := dynSymbols(t, lib)
		for _, s := range append(req, opt...) {
			if !syms[s] && !(strings.HasSuffix(lib, ".so.12") && s == "cuptiSubscribe_v2") { // 13.0+ only, optional
				t.Errorf("%s does not export %s", filepath.Base(lib), s)
			}
		}
	}
}

// TestMockExportsAgentSymbols keeps the mock honest: it exports what the agent uses.
func TestMockExportsAgentSymbols(t *testing.T) {
	needBuild(t)
	req, opt := agentSymbols(t)
	syms := dynSymbols(t, filepath.Join(testLib, "libcupti.so.13"))
	for _, s := range append(req, opt...) {
		if !syms[s] && s != "InitializeInjectionNvtx2" {
			t.Errorf("mock libcupti does not export %s", s)
		}
	}
	agent := dynSymbols(t, agentSO)
	for _, s := range []string{"InitializeInjection", "InitializeInjectionNvtx2", "pm_inject_start"} {
		if !agent[s] {
			t.Errorf("agent does not export %s", s)
		}
	}
	for s := range agent {
		if strings.HasPrefix(s, "pm_") && s != "pm_inject_start" { // the late-start entry point (docs/injection.md)
			t.Errorf("agent leaks internal symbol %s", s)
		}
	}
}

// TestRealLibcuptiWithoutGPU loads the real libcupti.so.12 (12.9) and .so.13
// (13.0) from the wheels into a process whose libcuda is the fake one: CUPTI
// cannot initialize, the agent must end passive or failed with a log line, and
// the target must run to completion unaffected.
func TestRealLibcuptiWithoutGPU(t *testing.T) {
	cache := fetchWheels(t)
	for _, lib := range []string{
		filepath.Join(cache, "cu12/nvidia/cuda_cupti/lib/libcupti.so.12"),
		filepath.Join(cache, "cu13/nvidia/cu13/lib/libcupti.so.13"),
	} {
		t.Run(filepath.Base(lib), func(t *testing.T) {
			p := start(t, baseEnv(true, "PROFILEMATE_START=graph", "PROFILEMATE_CUPTI_PATH="+lib), "basic")
			pid := pidOf(t, p.waitLine("PID", 10*time.Second))
			p.waitLine("READY", 20*time.Second)
			r := findRing(t, pid, 2*time.Second)
			p.quit()
			c := newCapture()
			c.drain(t, r)
			st := r.Header().ProducerState
			if st != ring.StatePassive && st != ring.StateFailed && st != ring.StateExited {
				t.Errorf("state %d", st)
			}
			if len(c.procInfo) != 1 || c.procInfo[0].CuptiVersion == 0 {
				t.Errorf("process_info %+v", c.procInfo)
			}
			if len(c.logs) == 0 || !strings.HasPrefix(c.logs[0], "cupti_unavailable: ") && !strings.HasPrefix(c.logs[0], "cupti_busy: ") {
				t.Errorf("logs %q", c.logs)
			}
			t.Logf("CUPTI %d: state %d, logs %q", c.procInfo[0].CuptiVersion, st, c.logs)
		})
	}
}
