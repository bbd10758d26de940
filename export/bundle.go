package export

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// BundleSuffix is the file name suffix of a trace bundle.
const BundleSuffix = ".tar.zst"

// maxMember bounds one bundle member on read, so a corrupt or hostile bundle cannot exhaust
// memory (raw streams of a long capture stay far below this).
const maxMember = 4 << 30

// ErrBundle reports a bundle that cannot be read.
var ErrBundle = errors.New("invalid bundle")

// WriteBundle writes the sources of the session in dir — metadata.json and raw/ — into a
// zstd-compressed tar at out, with member names prefixed by the directory's base name.
// Raw streams are stored columnar (see columnar.go) and read back byte-identical. Derived
// files are not bundled: `export` recreates every one of them from these sources (they
// would otherwise be most of the bundle). The file is written to a temporary name and
// renamed, so a bundle on disk is always complete.
func WriteBundle(dir, out string) (err error) {
	base := filepath.Base(dir)
	var files []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			if rel == "metadata.json" || (strings.HasPrefix(rel, "raw/") && !strings.Contains(rel[4:], "/")) {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	sort.Strings(files)
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating bundle: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	zw, err := zstd.NewWriter(tmp, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	// Raw streams are transposed in parallel, a window of GOMAXPROCS files at a time (so at
	// most that many are held in memory), and written in order.
	par := max(1, runtime.GOMAXPROCS(0))
	for lo := 0; lo < len(files); lo += par {
		batch := files[lo:min(len(files), lo+par)]
		cols := make([][]byte, len(batch))
		var wg sync.WaitGroup
		for i, p := range batch {
			if rel, _ := filepath.Rel(dir, p); strings.HasPrefix(filepath.ToSlash(rel), "raw/") && strings.HasSuffix(rel, ".pmr") {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cols[i] = columnarOf(p)
				}()
			}
		}
		wg.Wait()
		for i, p := range batch {
			rel, _ := filepath.Rel(dir, p)
			rel = filepath.ToSlash(rel)
			var err error
			if cols[i] != nil {
				err = addBytes(tw, p, path.Join(base, strings.TrimSuffix(rel, ".pmr")+colSuffix), cols[i])
			} else {
				err = addFile(tw, p, path.Join(base, rel))
			}
			if err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

func addFile(tw *tar.Writer, p, name string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime().Truncate(time.Second), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("bundling %s: %w", name, err)
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("bundling %s: %w", name, err)
	}
	return nil
}

// columnarOf returns the columnar form of a raw stream file when it transposes and
// round-trips exactly, else nil (the file is then bundled as it is).
func columnarOf(p string) []byte {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil
	}
	col, err := encodeColumnar(raw)
	if err != nil {
		return nil
	}
	if back, err := decodeColumnar(col, len(raw)); err != nil || !bytes.Equal(back, raw) {
		return nil
	}
	return col
}

func addBytes(tw *tar.Writer, p, name string, data []byte) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: st.ModTime().Truncate(time.Second), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("bundling %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("bundling %s: %w", name, err)
	}
	return nil
}

// Member is one file of a bundle, relative to the session directory.
type Member struct {
	Name string // e.g. "raw/1234.cupti.pmr", "metadata.json"
	Data []byte
}

// ReadBundle reads every regular member of a bundle into memory. Member names are cleaned
// and must stay inside the session directory; anything else is an error. A bundle cut off in
// the middle returns the members read so far together with an error wrapping ErrBundle.
func ReadBundle(p string) (session string, members []Member, err error) {
	f, err := os.Open(p)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxMember))
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return session, members, fmt.Errorf("%w: %s: %v", ErrBundle, p, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(hdr.Name)
		top, rest, ok := strings.Cut(name, "/")
		if !ok || rest == "" || strings.HasPrefix(name, "/") || strings.HasPrefix(rest, "..") || strings.Contains(rest, "/../") {
			return session, members, fmt.Errorf("%w: member %q is outside the session directory", ErrBundle, hdr.Name)
		}
		if session == "" {
			session = top
		} else if top != session {
			return session, members, fmt.Errorf("%w: members of two sessions (%s, %s)", ErrBundle, session, top)
		}
		if hdr.Size < 0 || hdr.Size > maxMember {
			return session, members, fmt.Errorf("%w: member %s has size %d", ErrBundle, name, hdr.Size)
		}
		data, err := io.ReadAll(io.LimitReader(tr, hdr.Size))
		if err != nil {
			return session, members, fmt.Errorf("%w: member %s: %v", ErrBundle, name, err)
		}
		if int64(len(data)) != hdr.Size {
			return session, members, fmt.Errorf("%w: member %s truncated", ErrBundle, name)
		}
		if strings.HasPrefix(rest, "raw/") && strings.HasSuffix(rest, colSuffix) {
			raw, err := decodeColumnar(data, maxMember)
			if err != nil {
				return session, members, fmt.Errorf("%w: member %s: %v", ErrBundle, name, err)
			}
			rest, data = strings.TrimSuffix(rest, colSuffix)+".pmr", raw
		}
		members = append(members, Member{Name: rest, Data: data})
	}
	if session == "" {
		return "", nil, fmt.Errorf("%w: %s holds no session files", ErrBundle, p)
	}
	return session, members, nil
}
