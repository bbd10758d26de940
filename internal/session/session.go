// Package session creates and fills a ProfileMate session directory
// ($VLLM_PROFILING_DIR/session_YYYYMMDD_HHMMSS) without following symbolic links, so that a
// tracer running as root cannot be tricked into writing through a link planted in /tmp.
package session

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultBase is where sessions go when VLLM_PROFILING_DIR is unset (the original default).
const DefaultBase = "/tmp/vllm_profiling"

// EnvBase names the environment variable that overrides DefaultBase.
const EnvBase = "VLLM_PROFILING_DIR"

// dirMode keeps traces private: kernel names, command lines and request timings are sensitive.
const dirMode = 0o700

// fileMode is the mode of every file written into a session.
const fileMode = 0o600

// ErrSymlink reports a path component that is a symbolic link where a directory was expected.
var ErrSymlink = errors.New("refusing to follow a symbolic link")

// Base returns the session base directory from the environment or the default.
func Base() string {
	if b := os.Getenv(EnvBase); b != "" {
		return b
	}
	return DefaultBase
}

// Dir is an open session directory. Files are created relative to its descriptor.
type Dir struct {
	Path string
	Name string
	fd   int
}

// Create makes base (0700, if missing) and a new session_<time> directory inside it. The name
// gets a numeric suffix when two sessions start within the same second.
func Create(base string, now time.Time) (*Dir, error) {
	if base == "" {
		base = Base()
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return nil, err
	}
	bfd, err := openDirNoFollow(abs, true)
	if err != nil {
		return nil, fmt.Errorf("output directory %s: %w", abs, err)
	}
	defer unix.Close(bfd)
	stamp := "session_" + now.Format("20060102_150405")
	for i := 0; i < 100; i++ {
		name := stamp
		if i > 0 {
			name = fmt.Sprintf("%s_%d", stamp, i)
		}
		err := unix.Mkdirat(bfd, name, dirMode)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating %s/%s: %w", abs, name, err)
		}
		fd, err := unix.Openat(bfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s/%s: %w", abs, name, err)
		}
		return &Dir{Path: filepath.Join(abs, name), Name: name, fd: fd}, nil
	}
	return nil, fmt.Errorf("creating a session in %s: too many sessions started this second", abs)
}

// Open opens an existing directory (for export into a chosen output directory), creating it
// when missing, with the same no-symlink rule.
func Open(path string) (*Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fd, err := openDirNoFollow(abs, true)
	if err != nil {
		return nil, fmt.Errorf("output directory %s: %w", abs, err)
	}
	return &Dir{Path: abs, Name: filepath.Base(abs), fd: fd}, nil
}

// openDirNoFollow walks abs from / one component at a time with O_NOFOLLOW, creating missing
// components with mode 0700 when create is set.
func openDirNoFollow(abs string, create bool) (int, error) {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, part := range strings.Split(strings.Trim(abs, "/"), "/") {
		if part == "" || part == "." {
			continue
		}
		next, err := unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if merr := unix.Mkdirat(fd, part, dirMode); merr != nil && !errors.Is(merr, unix.EEXIST) {
				unix.Close(fd)
				return -1, merr
			}
			next, err = unix.Openat(fd, part, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			var st unix.Stat_t
			if unix.Fstatat(fd, part, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = fmt.Errorf("%w: %s", ErrSymlink, part)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// Create creates a new file rel (which may contain one level of subdirectory, created 0700)
// exclusively, never following links.
func (d *Dir) Create(rel string) (*os.File, error) {
	dfd := d.fd
	dir, name := filepath.Split(filepath.Clean(rel))
	if strings.HasPrefix(rel, "/") || strings.Contains(rel, "..") {
		return nil, fmt.Errorf("invalid session file name %q", rel)
	}
	closeDir := false
	if dir != "" {
		dir = strings.TrimSuffix(dir, "/")
		if err := unix.Mkdirat(d.fd, dir, dirMode); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		sub, err := unix.Openat(d.fd, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dir, err)
		}
		dfd, closeDir = sub, true
	}
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, fileMode)
	if closeDir {
		unix.Close(dfd)
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", rel, err)
	}
	return os.NewFile(uintptr(fd), filepath.Join(d.Path, rel)), nil
}

// WriteFile writes data to rel inside the session.
func (d *Dir) WriteFile(rel string, data []byte) error {
	f, err := d.Create(rel)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close releases the directory descriptor.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}
