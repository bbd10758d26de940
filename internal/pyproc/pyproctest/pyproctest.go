// Package pyproctest helps tests find CPython interpreters and run target scripts.
package pyproctest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Interpreters lists the CPython interpreters the tests run against: $PROFILEMATE_TEST_PYTHONS
// (colon-separated) or every python3.N found in pyenv, /usr/bin and $PATH.
func Interpreters() []string {
	if v := os.Getenv("PROFILEMATE_TEST_PYTHONS"); v != "" {
		return strings.Split(v, ":")
	}
	var c []string
	home, _ := os.UserHomeDir()
	g, _ := filepath.Glob(filepath.Join(home, ".pyenv/versions/3.*/bin/python3.[0-9]*"))
	c = append(c, g...)
	g, _ = filepath.Glob("/usr/bin/python3.[0-9]*")
	c = append(c, g...)
	if out, err := exec.Command("python3", "-c", "import sys; print(sys.executable)").Output(); err == nil {
		c = append(c, strings.TrimSpace(string(out)))
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range c {
		if !nameRe.MatchString(filepath.Base(p)) {
			continue
		}
		r, err := filepath.EvalSymlinks(p)
		if err != nil || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Minor returns the minor version of a python3.N interpreter path, or -1.
func Minor(python string) int {
	out, err := exec.Command(python, "-c", "import sys; print(sys.version_info[1])").Output()
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range strings.TrimSpace(string(out)) {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

var nameRe = regexp.MustCompile(`^python3\.[0-9]+$`)
