package export

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// outputs builds every derived file of a session. Files under moeDir are copies of the
// MoE files, for the documented snippets that `cd moe_expert_tracking/`.
func outputs(s *Session) []output {
	usage, timeline := graphUsage(s)
	out := []output{gpuKernels(s), usage, timeline, graphCaptures(s)}
	out = append(out, kvTables(s)...)
	moe, _ := moeTables(s)
	out = append(out, moe...)
	for _, o := range moe {
		out = append(out, subdirOutput{moeDir, o})
	}
	out = append(out, forwardTables(s)...)
	out = append(out, cpuTables(s)...)
	out = append(out, batchTables(s)...)
	out = append(out, preemptTables(s)...)
	out = append(out, launchTables(s)...)
	return out
}

// subdirOutput writes an output inside a subdirectory.
type subdirOutput struct {
	dir string
	o   output
}

func (d subdirOutput) fileName() string { return d.dir + "/" + d.o.fileName() }

func (d subdirOutput) write(dir string) error {
	p := filepath.Join(dir, d.dir)
	if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return d.o.write(p)
}

// WriteDerived writes the derived files of s into dir, which must exist (a session
// directory). Files are first written into a private temporary directory inside dir and
// then renamed into place one by one, so a reader never sees a half-written file and a
// failure leaves the previous files untouched. It returns the names written.
func WriteDerived(s *Session, dir string) ([]string, error) {
	tmp, err := os.MkdirTemp(dir, ".export-")
	if err != nil {
		return nil, fmt.Errorf("writing derived files: %w", err)
	}
	defer os.RemoveAll(tmp)
	var names []string
	subdirs := map[string]bool{}
	for _, o := range outputs(s) {
		if err := o.write(tmp); err != nil {
			return nil, fmt.Errorf("writing %s: %w", o.fileName(), err)
		}
		if sd, ok := o.(subdirOutput); ok {
			subdirs[sd.dir] = true
		} else {
			names = append(names, o.fileName())
		}
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(dir, n)); err != nil {
			return nil, err
		}
	}
	for sd := range subdirs {
		dst := filepath.Join(dir, sd)
		if st, err := os.Lstat(dst); err == nil {
			if !st.IsDir() {
				return nil, fmt.Errorf("%s exists and is not a directory", dst)
			}
			if err := os.RemoveAll(dst); err != nil {
				return nil, err
			}
		}
		if err := os.Rename(filepath.Join(tmp, sd), dst); err != nil {
			return nil, err
		}
		ents, _ := os.ReadDir(dst)
		for _, e := range ents {
			names = append(names, sd+"/"+e.Name())
		}
	}
	return names, nil
}

// Export recreates a complete session directory at out from a bundle or session directory:
// metadata.json, raw/ and every derived file. The result is built beside out under a
// temporary name and renamed at the end; out must not exist or be an empty directory.
func Export(src, out string) (*Session, error) {
	s, err := Load(src)
	if err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(out); err == nil {
		if len(ents) > 0 {
			return nil, fmt.Errorf("output directory %s is not empty", out)
		}
		if err := os.Remove(out); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(filepath.Clean(out))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := copySources(src, tmp); err != nil {
		return nil, err
	}
	if err := completeMetadata(s, tmp); err != nil {
		return nil, err
	}
	if _, err := WriteDerived(s, tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// copySources copies metadata.json and raw/ from a bundle or session directory.
func copySources(src, dst string) error {
	if err := os.Mkdir(filepath.Join(dst, "raw"), 0o700); err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		_, members, _ := ReadBundle(src)
		for _, m := range members {
			if m.Name == "metadata.json" || (strings.HasPrefix(m.Name, "raw/") && !strings.Contains(m.Name[4:], "/")) {
				if err := os.WriteFile(filepath.Join(dst, m.Name), m.Data, 0o600); err != nil {
					return err
				}
			}
		}
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(src, "raw", "*.pmr"))
	files = append(files, filepath.Join(src, "metadata.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, f)
		if err := os.WriteFile(filepath.Join(dst, rel), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
