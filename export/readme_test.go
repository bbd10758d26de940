package export

import (
	"os"
	"strings"
	"testing"
)

// Every column of every CSV is described in the README's output reference.
func TestREADMEDocumentsEveryColumn(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if i := strings.Index(doc, "## Output reference"); i >= 0 {
		doc = doc[i:]
	}
	if i := strings.Index(doc, "\n## Layout"); i >= 0 {
		doc = doc[:i]
	}
	s, err := Load(golden(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outputs(s) {
		tb, ok := o.(*table)
		if !ok {
			if !strings.Contains(doc, o.fileName()) && !strings.HasPrefix(o.fileName(), moeDir) {
				t.Errorf("README does not describe %s", o.fileName())
			}
			continue
		}
		sec := strings.Index(doc, tb.name)
		if sec < 0 {
			t.Errorf("README does not describe %s", tb.name)
			continue
		}
		for _, c := range tb.header {
			if !strings.Contains(doc, "`"+c+"`") {
				t.Errorf("%s: column %s is not documented", tb.name, c)
			}
		}
	}
}
