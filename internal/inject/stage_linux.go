package inject

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Staging is the directory D of docs/injection.md §1 inside the target's mount namespace.
type Staging struct {
	Pid int
	// Dir is D as the target sees it (/tmp/profilemate-inject-<pid>-<nonce>).
	Dir string
	// Agent, Conf, PyHook, Log are the paths inside D as the target sees them.
	Agent, Conf, PyHook, Log string
	// AgentInode identifies the agent copy in /proc/PID/maps.
	AgentInode uint64

	parent   int // O_PATH fd of D's parent, resolved inside the target's root; -1 once removed
	name     string
	uid, gid int
}

// StageConfig is what goes into D.
type StageConfig struct {
	Agent  string // libprofilemate.so on this host
	PyHook string // directory holding the profilemate_trace package ("" = no hook)
	// PyhookFromAgent: the agent starts the hook itself through the Python C API (ptrace path).
	PyhookFromAgent bool
	Start           string // none, graph or nodes
	OrphanTimeoutS  int
}

// stageParents are tried in order for D's parent: the first that is a directory in the target's
// root and not mounted noexec (the agent is mapped executable from there).
var stageParents = []string{"/tmp", "/var/tmp", "/dev/shm"}

// Stage creates D in pid's mount namespace (through /proc/PID/root, resolving every path inside
// that root), copies the agent and the hook into it, writes inject.conf, and hands D to the
// target's effective uid and gid, mode 0700.
func Stage(pid int, cfg StageConfig) (*Staging, error) {
	if cfg.Agent == "" {
		return nil, errors.New("staging: no agent library (build it with `make agent`, or pass --agent)")
	}
	uid, gid, err := targetIDs(pid)
	if err != nil {
		return nil, err
	}
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the root of pid %d: %w", pid, err)
	}
	defer unix.Close(root)
	var parent int = -1
	var parentPath string
	var why []string
	for _, p := range stageParents {
		fd, err := unix.Openat2(root, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			why = append(why, p+": "+err.Error())
			continue
		}
		var sfs unix.Statfs_t
		if err := unix.Fstatfs(fd, &sfs); err == nil && sfs.Flags&unix.ST_NOEXEC != 0 {
			why = append(why, p+": mounted noexec")
			unix.Close(fd)
			continue
		}
		parent, parentPath = fd, p
		break
	}
	if parent < 0 {
		return nil, fmt.Errorf("staging in pid %d: no usable directory (%s)", pid, strings.Join(why, "; "))
	}
	nonce := make([]byte, 6)
	rand.Read(nonce)
	name := fmt.Sprintf("%s%d-%s", stagePrefix, pid, hex.EncodeToString(nonce))
	if err := unix.Mkdirat(parent, name, 0o700); err != nil {
		unix.Close(parent)
		return nil, fmt.Errorf("creating %s/%s in pid %d's mount namespace: %w", parentPath, name, pid, err)
	}
	s := &Staging{Pid: pid, Dir: parentPath + "/" + name, parent: parent, name: name, uid: uid, gid: gid}
	s.Agent = s.Dir + "/" + agentName
	s.Conf = s.Dir + "/inject.conf"
	s.Log = s.Dir + "/inject.log"
	fail := func(err error) (*Staging, error) {
		s.Remove()
		return nil, err
	}
	d, err := unix.Openat(parent, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		return fail(fmt.Errorf("opening %s: %w", s.Dir, err))
	}
	defer unix.Close(d)
	ino, err := copyInto(d, agentName, cfg.Agent, 0o755)
	if err != nil {
		return fail(fmt.Errorf("copying the agent into %s: %w", s.Dir, err))
	}
	s.AgentInode = ino
	if cfg.PyHook != "" {
		pkg := filepath.Join(cfg.PyHook, "profilemate_trace")
		if _, err := os.Stat(pkg); err != nil {
			return fail(fmt.Errorf("python hook: %w", err))
		}
		if err := copyTree(d, "pyhook/profilemate_trace", pkg); err != nil {
			return fail(fmt.Errorf("copying the python hook into %s: %w", s.Dir, err))
		}
		s.PyHook = s.Dir + "/pyhook"
	}
	if err := writeAt(d, "inject.conf", []byte(s.conf(cfg)), 0o644); err != nil {
		return fail(err)
	}
	if err := writeAt(d, "inject.log", nil, 0o644); err != nil {
		return fail(err)
	}
	if err := chownTree(d, uid, gid); err != nil {
		return fail(fmt.Errorf("handing %s to uid %d: %w", s.Dir, uid, err))
	}
	if err := unix.Fchownat(parent, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fail(fmt.Errorf("handing %s to uid %d: %w", s.Dir, uid, err))
	}
	return s, nil
}

func (s *Staging) conf(cfg StageConfig) string {
	start := cfg.Start
	if start == "" {
		start = "none"
	}
	fromAgent := "0"
	if cfg.PyhookFromAgent && s.PyHook != "" {
		fromAgent = "1"
	}
	orphan := cfg.OrphanTimeoutS
	if orphan <= 0 {
		orphan = 30
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by profilemate-trace attach --inject (docs/injection.md)\n")
	if s.PyHook != "" {
		fmt.Fprintf(&b, "pyhook_dir=%s\n", s.PyHook)
	}
	fmt.Fprintf(&b, "pyhook_from_agent=%s\nlog=%s\nstart=%s\norphan_timeout_s=%d\n", fromAgent, s.Log, start, orphan)
	return b.String()
}

// writeFile adds a file to D, owned by the target's uid.
func (s *Staging) writeFile(name string, b []byte) error {
	if s.parent < 0 {
		return errors.New("staging directory already removed")
	}
	d, err := unix.Openat(s.parent, s.name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.Dir, err)
	}
	defer unix.Close(d)
	if err := writeAt(d, name, b, 0o644); err != nil {
		return err
	}
	return unix.Fchownat(d, name, s.uid, s.gid, unix.AT_SYMLINK_NOFOLLOW)
}

// ReadLog returns the agent's and the hook's injected-mode log (at most max bytes, the end).
func (s *Staging) ReadLog(max int) string {
	if s == nil || s.parent < 0 {
		return ""
	}
	fd, err := unix.Openat(s.parent, s.name+"/inject.log", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	f := os.NewFile(uintptr(fd), "inject.log")
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 1<<20))
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// Remove deletes D (never following a link inside it) and releases the parent descriptor.
// Safe to call twice.
func (s *Staging) Remove() error {
	if s == nil || s.parent < 0 {
		return nil
	}
	// A producer may still append a last line to its log (reopening it by name) or Python
	// may write a bytecode cache while we remove: retry a few times on a directory that
	// refilled.
	var err error
	for i := 0; i < 5; i++ {
		if err = removeAt(s.parent, s.name); err == nil || !errors.Is(err, unix.ENOTEMPTY) {
			break
		}
		time.Sleep(time.Duration(20*(i+1)) * time.Millisecond)
	}
	if err == nil || errors.Is(err, unix.ENOENT) {
		unix.Close(s.parent)
		s.parent = -1
		return nil
	}
	return fmt.Errorf("removing %s in pid %d's mount namespace: %w", s.Dir, s.Pid, err)
}

func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	for _, n := range names {
		if err := removeAt(fd, n); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// copyInto copies src into dirfd/name (created, never followed) and returns the new inode.
func copyInto(dirfd int, name, src string, mode uint32) (uint64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return 0, err
	}
	out := os.NewFile(uintptr(fd), name)
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		out.Close()
		return 0, err
	}
	return st.Ino, out.Close()
}

func writeAt(dirfd int, name string, b []byte, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return f.Close()
}

// copyTree copies the Python package at src to dirfd/rel (rel made of plain names), skipping
// caches and tests.
func copyTree(dirfd int, rel, src string) error {
	return filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(src, p)
		dst := rel
		if r != "." {
			dst = rel + "/" + filepath.ToSlash(r)
		}
		if e.IsDir() {
			if e.Name() == "__pycache__" || e.Name() == "tests" {
				return filepath.SkipDir
			}
			return mkdirAll(dirfd, dst)
		}
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".pyc") {
			return nil
		}
		_, err = copyInto(dirfd, dst, p, 0o644)
		return err
	})
}

func mkdirAll(dirfd int, rel string) error {
	cur := ""
	for _, part := range strings.Split(rel, "/") {
		if cur != "" {
			cur += "/"
		}
		cur += part
		if err := unix.Mkdirat(dirfd, cur, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

// chownTree hands everything under dirfd to uid:gid (we created it all: nothing to follow).
func chownTree(dirfd int, uid, gid int) error {
	own, err := unix.Openat(dirfd, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(own), "")
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Fchownat(dirfd, n, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		sub, err := unix.Openat(dirfd, n, unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // a file
		}
		err = chownTree(sub, uid, gid)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// targetIDs reads the effective uid and gid of pid from /proc/PID/status.
func targetIDs(pid int) (uid, gid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading the credentials of pid %d: %w", pid, err)
	}
	uid, gid = -1, -1
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		switch f[0] {
		case "Uid:":
			uid, _ = strconv.Atoi(f[2])
		case "Gid:":
			gid, _ = strconv.Atoi(f[2])
		}
	}
	if uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("pid %d: no Uid/Gid in /proc/%d/status", pid, pid)
	}
	return uid, gid, nil
}

func readStatState(pid int) (byte, error) { return statState(strconv.Itoa(pid)) }

// statState returns the state letter of /proc/<proc>/stat (proc is "PID" or "PID/task/TID"). The
// state follows the command name, which is in parentheses and may contain any byte.
func statState(proc string) (byte, error) {
	b, err := os.ReadFile("/proc/" + proc + "/stat")
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, errors.New("bad stat")
	}
	return b[i+2], nil
}

// processGone says whether pid exited (gone, or a zombie that will never run again).
func processGone(pid int) bool {
	st, err := readStatState(pid)
	return err != nil || st == 'Z' || st == 'X'
}

// threadGone says whether thread tid of pid exited or is exiting.
func threadGone(pid, tid int) bool {
	st, err := statState(fmt.Sprintf("%d/task/%d", pid, tid))
	return err != nil || st == 'Z' || st == 'X'
}
