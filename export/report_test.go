package export

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/profilemate/profilemate-trace/export/exporttest"
)

func reportOf(t *testing.T, dir string) string {
	t.Helper()
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteReport(s, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

var external = regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?https?:`)

func TestReportContent(t *testing.T) {
	h := reportOf(t, golden(t))
	for _, want := range []string{"Prefill / decode", "GPU time under CUDA graphs", "FULL,8,8,True,False (graph 7)", "KV cache mean usage 2.0%",
		"load balance ratio", "preemptions (kv_cache_exhausted: 1)", "nvjet_sm90", "<svg", "scheduling"} {
		if !strings.Contains(h, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if m := external.FindString(h); m != "" {
		t.Errorf("report references the network: %q", m)
	}
	if strings.Contains(h, "<script") {
		t.Error("report has a script")
	}
}

// A session with only a CUPTI stream: every hook-based section says what is missing.
func TestReportMissingSections(t *testing.T) {
	b := exporttest.New(t0)
	cu := b.Stream(1, "cupti")
	cu.Add(exporttest.Name(1, "k"), exporttest.API(1, 1, 307, at(1), at(2)), exporttest.Kernel(1, 1, at(3), at(4)))
	dir := filepath.Join(t.TempDir(), "session_x")
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	h := reportOf(t, dir)
	for _, want := range []string{"No data:</b> no forward passes recorded", "No data:</b> no KV cache usage samples", "No data:</b> no MoE expert counts",
		"No data:</b> no scheduler steps", "No data:</b> no CPU spans", "missing: no vLLM meaning"} {
		if !strings.Contains(h, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

// The report renders in headless Chromium without console errors and without network
// (CI installs the chromium package).
func TestReportChromium(t *testing.T) {
	bin := ""
	for _, c := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(c); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Fatal("headless Chromium is needed to test the HTML report: apt-get install -y chromium")
	}
	o := exporttest.DefaultSynthetic
	o.Steps = 400
	sb, _ := exporttest.Synthetic(o)
	dir := filepath.Join(t.TempDir(), "session_20260101_000000")
	if err := sb.Write(dir); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	html := filepath.Join(t.TempDir(), "report.html")
	if err := WriteReportFile(s, html); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "report.png")
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
		"--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,4000", "--screenshot="+shot, "file://"+html)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, ":CONSOLE") || strings.Contains(l, "net::ERR") {
			t.Errorf("browser: %s", l)
		}
	}
	st, err := os.Stat(shot)
	if err != nil || st.Size() < 20000 {
		t.Fatalf("screenshot missing or blank: %v %v", st, err)
	}
	if p := os.Getenv("PROFILEMATE_REPORT_SCREENSHOT"); p != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(p, b, 0o644)
	}
}
