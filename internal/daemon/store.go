package daemon

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Capture states.
const (
	StateRunning    = "running"
	StateDone       = "done"
	StateFailed     = "failed"
	StateIncomplete = "incomplete" // the daemon died during the capture; raw streams may be partial
)

// Capture is one entry of the capture index (<bundle-dir>/<id>/capture.json).
type Capture struct {
	ID              string    `json:"id"`
	State           string    `json:"state"`
	Trigger         string    `json:"trigger"` // api, schedule
	Label           string    `json:"label,omitempty"`
	Pid             int       `json:"pid"`
	Comm            string    `json:"comm,omitempty"`
	Namespace       string    `json:"namespace,omitempty"`
	PodName         string    `json:"pod,omitempty"`
	Detail          string    `json:"detail"`
	SampleEvery     uint32    `json:"sample_every,omitempty"`
	DurationSec     float64   `json:"duration_sec"`
	Requested       time.Time `json:"requested_at"`
	Ended           time.Time `json:"ended_at,omitzero"`
	Session         string    `json:"session,omitempty"`
	Bundle          string    `json:"bundle,omitempty"` // file name inside the capture's directory
	BundleBytes     int64     `json:"bundle_bytes,omitempty"`
	Streams         int       `json:"streams,omitempty"`
	Records         uint64    `json:"records,omitempty"`
	Dropped         uint64    `json:"dropped,omitempty"`
	Pids            []int     `json:"pids,omitempty"`
	Warnings        []string  `json:"warnings,omitempty"`
	Error           string    `json:"error,omitempty"`
	Note            string    `json:"note,omitempty"`
	StopToBundleSec float64   `json:"stop_to_bundle_sec,omitempty"`
	DiskBytes       int64     `json:"disk_bytes,omitempty"`
}

// idRe is the only shape of capture id the daemon creates or accepts, so an id can never
// name a path outside the bundle directory.
var idRe = regexp.MustCompile(`^c[0-9]{8}t[0-9]{6}-[0-9a-f]{8}$`)

// ValidID reports whether s is a well-formed capture id.
func ValidID(s string) bool { return idRe.MatchString(s) }

func newID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return "c" + now.UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:])
}

// store is the bundle directory: one subdirectory per capture, reached only through an
// os.Root so that no name can escape it.
type store struct {
	dir  string
	root *os.Root
	mu   sync.Mutex
	caps map[string]*Capture
}

const indexFile = "capture.json"

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bundle directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, err
	}
	if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
		return nil, fmt.Errorf("bundle directory %s is not a directory", dir)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("bundle directory %s: making it private: %w", dir, err)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	s := &store{dir: dir, root: root, caps: map[string]*Capture{}}
	s.load()
	return s, nil
}

// load reads the index of every capture directory; a capture left "running" by a daemon
// that died is marked incomplete.
func (s *store) load() {
	ents, err := fs.ReadDir(s.root.FS(), ".")
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !ValidID(e.Name()) {
			continue
		}
		b, err := s.root.ReadFile(e.Name() + "/" + indexFile)
		if err != nil {
			continue
		}
		var c Capture
		if json.Unmarshal(b, &c) != nil || c.ID != e.Name() {
			continue
		}
		if c.State == StateRunning {
			c.State = StateIncomplete
			c.Note = "the daemon stopped during this capture (killed or crashed); raw streams in its directory may be partial"
			if c.Ended.IsZero() {
				if st, err := s.root.Stat(e.Name()); err == nil {
					c.Ended = st.ModTime()
				}
			}
			s.writeLocked(&c)
		}
		c.DiskBytes = s.du(c.ID)
		s.caps[c.ID] = &c
	}
}

// create makes a capture's private directory and records it.
func (s *store) create(c *Capture) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ValidID(c.ID) {
		return "", fmt.Errorf("invalid capture id %q", c.ID)
	}
	if err := s.root.Mkdir(c.ID, 0o700); err != nil {
		return "", err
	}
	cp := *c // the caller keeps changing c; the index holds its own copy
	s.caps[c.ID] = &cp
	if err := s.writeLocked(&cp); err != nil {
		return "", err
	}
	return s.dir + "/" + c.ID, nil
}

// update stores a copy of a changed capture.
func (s *store) update(c *Capture) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *c
	cp.DiskBytes = s.du(c.ID)
	s.caps[c.ID] = &cp
	return s.writeLocked(&cp)
}

func (s *store) writeLocked(c *Capture) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := c.ID + "/." + indexFile + ".tmp"
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return s.root.Rename(tmp, c.ID+"/"+indexFile)
}

// get returns a copy of a capture.
func (s *store) get(id string) (Capture, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.caps[id]
	if !ok {
		return Capture{}, false
	}
	return *c, true
}

// list returns copies of every capture, newest first.
func (s *store) list() []Capture {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Capture, 0, len(s.caps))
	for _, c := range s.caps {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Requested.Equal(out[j].Requested) {
			return out[i].Requested.After(out[j].Requested)
		}
		return out[i].ID > out[j].ID
	})
	return out
}

// openBundle opens a finished capture's bundle for reading.
func (s *store) openBundle(id string) (*os.File, Capture, error) {
	c, ok := s.get(id)
	if !ok {
		return nil, c, fs.ErrNotExist
	}
	if c.Bundle == "" || strings.ContainsAny(c.Bundle, "/\\") {
		return nil, c, errNoBundle
	}
	f, err := s.root.Open(c.ID + "/" + c.Bundle)
	return f, c, err
}

var errNoBundle = errors.New("this capture has no bundle")

// removeDir deletes a path inside a capture's directory (the expanded session).
func (s *store) removeDir(id, name string) error {
	if !ValidID(id) || name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return fmt.Errorf("invalid name %q", name)
	}
	return s.root.RemoveAll(id + "/" + name)
}

// remove deletes one capture's directory and index entry.
func (s *store) remove(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ValidID(id) {
		return fmt.Errorf("invalid capture id %q", id)
	}
	if err := s.root.RemoveAll(id); err != nil {
		return err
	}
	delete(s.caps, id)
	return nil
}

// du sums the sizes of the files of one capture directory.
func (s *store) du(id string) int64 {
	var n int64
	fs.WalkDir(s.root.FS(), id, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// enforce removes finished captures older than maxAge, then the oldest ones until the
// directory holds at most maxSize bytes. Running captures are never removed.
func (s *store) enforce(maxSize int64, maxAge time.Duration, now time.Time, m *metrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var total int64
	var done []*Capture
	for _, c := range s.caps {
		c.DiskBytes = s.du(c.ID)
		total += c.DiskBytes
		if c.State != StateRunning {
			done = append(done, c)
		}
	}
	sort.Slice(done, func(i, j int) bool { return endOf(done[i]).Before(endOf(done[j])) })
	for _, c := range done {
		reason := ""
		switch {
		case maxAge > 0 && now.Sub(endOf(c)) > maxAge:
			reason = "age"
		case maxSize > 0 && total > maxSize:
			reason = "size"
		default:
			continue
		}
		if err := s.root.RemoveAll(c.ID); err != nil {
			continue
		}
		total -= c.DiskBytes
		delete(s.caps, c.ID)
		m.retentionDelete.WithLabelValues(reason).Inc()
	}
	m.storedBytes.Set(float64(total))
	m.storedCaptures.Set(float64(len(s.caps)))
}

func endOf(c *Capture) time.Time {
	if !c.Ended.IsZero() {
		return c.Ended
	}
	return c.Requested
}

func (s *store) close() error { return s.root.Close() }
