package inject

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// mappedFile is one ELF object mapped in the target.
type mappedFile struct {
	Path string // as the target sees it (may end in " (deleted)")
	Base uint64 // load bias: run-time address = symbol value + Base
	open string // a path this process can open: /proc/PID/map_files/… or /proc/PID/root/…
}

// findMapped returns the first object mapped in maps whose path satisfies match, with its load
// bias. The file is opened through /proc/PID/map_files (works across mount namespaces and for
// deleted files; needs CAP_SYS_ADMIN or root), else /proc/PID/root.
func findMapped(pid int, maps []pyproc.Mapping, match func(m pyproc.Mapping) bool) (*mappedFile, error) {
	for _, m := range maps {
		if m.Path == "" || m.Offset != 0 || !match(m) {
			continue
		}
		mf := &mappedFile{Path: m.Path}
		mf.open = fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.Start, m.End)
		if _, err := os.Stat(mf.open); err != nil {
			mf.open = pyproc.HostPath(pid, strings.TrimSuffix(m.Path, " (deleted)"))
		}
		f, err := elf.Open(mf.open)
		if err != nil {
			return nil, fmt.Errorf("opening %s of pid %d: %w", m.Path, pid, err)
		}
		bias, err := loadBias(f, m.Start)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Path, err)
		}
		mf.Base = bias
		return mf, nil
	}
	return nil, nil
}

// loadBias is where an ELF object was loaded given the start of its mapping at file offset 0:
// 0 for ET_EXEC, else that start minus the first PT_LOAD's page-aligned address.
func loadBias(f *elf.File, start uint64) (uint64, error) {
	if f.Type == elf.ET_EXEC {
		return 0, nil
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			return start - (p.Vaddr &^ 0xfff), nil
		}
	}
	return 0, errors.New("no PT_LOAD segment")
}

// symbol returns the run-time address of a defined function exported by mf (dynamic symbols).
func (mf *mappedFile) symbol(name string) (uint64, error) {
	f, err := elf.Open(mf.open)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		return 0, fmt.Errorf("%s: reading dynamic symbols: %w", mf.Path, err)
	}
	for _, s := range syms {
		if s.Name == name && s.Value != 0 && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
			return s.Value + mf.Base, nil
		}
	}
	return 0, fmt.Errorf("%s exports no function %s", mf.Path, name)
}

func baseIs(names ...string) func(pyproc.Mapping) bool {
	return func(m pyproc.Mapping) bool {
		b := filepath.Base(strings.TrimSuffix(m.Path, " (deleted)"))
		for _, n := range names {
			if b == n || strings.HasPrefix(b, n) {
				return true
			}
		}
		return false
	}
}

// loaderFuncs are the target's dlopen, dlerror and the flags to pass.
type loaderFuncs struct {
	dlopen, dlerror uint64
	flags           uint64
	from            string // the library dlopen was found in
}

const (
	rtldNow       = 0x2
	rtldDlopenBit = 0x80000000 // __RTLD_DLOPEN: what dlopen adds when it calls __libc_dlopen_mode
)

// resolveLoader finds dlopen in the target: libc.so.6 (glibc ≥ 2.34), else libdl.so.2 (older
// glibc, when the program loaded it), else glibc's internal __libc_dlopen_mode (older glibc
// without libdl; no dlerror then). musl is refused: the agent is built against glibc.
func resolveLoader(pid int, maps []pyproc.Mapping) (*loaderFuncs, error) {
	if musl, _ := findMapped(pid, maps, baseIs("ld-musl-", "libc.musl-")); musl != nil {
		return nil, fmt.Errorf("pid %d uses musl libc (%s): injection supports glibc targets only (the agent is built against glibc)", pid, musl.Path)
	}
	libc, err := findMapped(pid, maps, func(m pyproc.Mapping) bool {
		b := filepath.Base(strings.TrimSuffix(m.Path, " (deleted)"))
		return b == "libc.so.6" || (strings.HasPrefix(b, "libc-2.") && strings.HasSuffix(b, ".so"))
	})
	if err != nil {
		return nil, err
	}
	if libc == nil {
		return nil, fmt.Errorf("pid %d has no glibc mapped (a static or non-glibc program): nothing to call dlopen with", pid)
	}
	lf := &loaderFuncs{flags: rtldNow}
	if a, err := libc.symbol("dlopen"); err == nil {
		lf.dlopen, lf.from = a, libc.Path
		lf.dlerror, _ = libc.symbol("dlerror")
		return lf, nil
	}
	if dl, _ := findMapped(pid, maps, baseIs("libdl.so.2", "libdl-2.")); dl != nil {
		if a, err := dl.symbol("dlopen"); err == nil {
			lf.dlopen, lf.from = a, dl.Path
			lf.dlerror, _ = dl.symbol("dlerror")
			return lf, nil
		}
	}
	if a, err := libc.symbol("__libc_dlopen_mode"); err == nil {
		lf.dlopen, lf.from, lf.flags = a, libc.Path+" (__libc_dlopen_mode)", rtldNow|rtldDlopenBit
		return lf, nil
	}
	return nil, fmt.Errorf("pid %d: no dlopen in %s, no libdl.so.2 loaded and no __libc_dlopen_mode", pid, libc.Path)
}

// isStagedAgent matches an agent copy loaded by an earlier injection (its staging directory may
// be gone: the mapping then reads "… (deleted)").
func isStagedAgent(m pyproc.Mapping) bool {
	p := strings.TrimSuffix(m.Path, " (deleted)")
	return filepath.Base(p) == agentName && strings.HasPrefix(filepath.Base(filepath.Dir(p)), stagePrefix)
}
