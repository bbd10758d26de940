//go:build linux && amd64

package inject

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/profilemate/profilemate-trace/internal/pyproc"
)

// sampleGap separates the two looks at the threads that decide that one is parked.
const sampleGap = 20 * time.Millisecond

// stopWait bounds the wait for an interrupted thread to stop (it is sleeping in a system call,
// so it stops at once; one in uninterruptible sleep is given up).
const stopWait = time.Second

// ptraceLoad loads req.lib into pid through one thread parked in a blocking system call and
// calls its pm_inject_start(req.conf). When an agent copy from an earlier injection is still
// mapped (the library stays loaded after detach), only pm_inject_start is called.
func ptraceLoad(ctx context.Context, req loadRequest) (*LoadResult, error) {
	maps, err := pyproc.ReadMaps(req.pid)
	if err != nil {
		return nil, err
	}
	res := &LoadResult{}
	var startAddr uint64
	var lf *loaderFuncs
	prev, err := findMapped(req.pid, maps, isStagedAgent)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		if startAddr, err = prev.symbol(startSymbol); err != nil {
			return nil, err
		}
		res.Reused = prev.Path
	} else if lf, err = resolveLoader(req.pid, maps); err != nil {
		return nil, err
	}
	err = onTracerThread(func() error {
		t, err := pickAndSeize(ctx, req, maps)
		if err != nil {
			return err
		}
		res.Tid, res.Syscall = t.tid, syscallName(t.nr)
		t.warn = req.warn
		callErr := func() error {
			if lf != nil {
				libAddr, err := t.pushString(req.lib)
				if err != nil {
					return err
				}
				h, err := t.call(ctx, lf.dlopen, libAddr, lf.flags)
				if err != nil {
					return fmt.Errorf("calling dlopen in pid %d: %w", req.pid, err)
				}
				if h == 0 {
					why := "no dlerror in this C library"
					if lf.dlerror != 0 {
						if e, err := t.call(ctx, lf.dlerror); err != nil {
							return fmt.Errorf("calling dlerror in pid %d: %w", req.pid, err)
						} else if e != 0 {
							why, _ = t.readString(e, 1024)
						}
					}
					return fmt.Errorf("dlopen(%q) in pid %d failed: %s", req.lib, req.pid, why)
				}
				maps, err := pyproc.ReadMaps(req.pid)
				if err != nil {
					return err
				}
				agent, err := findMapped(req.pid, maps, func(m pyproc.Mapping) bool { return m.Inode == req.libInode })
				if err != nil {
					return err
				}
				if agent == nil {
					return fmt.Errorf("dlopen(%q) succeeded but pid %d maps no file with its inode %d", req.lib, req.pid, req.libInode)
				}
				if startAddr, err = agent.symbol(startSymbol); err != nil {
					return err
				}
			}
			confAddr, err := t.pushString(req.conf)
			if err != nil {
				return err
			}
			rc, err := t.call(ctx, startAddr, confAddr)
			if err != nil {
				return fmt.Errorf("calling %s in pid %d: %w", startSymbol, req.pid, err)
			}
			res.StartResult = int(int32(uint32(rc)))
			res.Started = res.StartResult >= 0
			return nil
		}()
		if t.inCall || errors.Is(callErr, errExited) {
			// Crashed or gone: nothing to give back.
			return callErr
		}
		relErr := t.release()
		res.ThreadStopped = time.Since(t.stopped)
		return errors.Join(callErr, relErr)
	})
	if err != nil {
		return res, err
	}
	if res.StartResult < 0 {
		return res, fmt.Errorf("%s in pid %d returned %d (see the injection log)", startSymbol, req.pid, res.StartResult)
	}
	return res, nil
}

// pickAndSeize finds a parked thread and stops it, retrying until req.safePointWait has passed.
func pickAndSeize(ctx context.Context, req loadRequest, maps []pyproc.Mapping) (*remoteThread, error) {
	deadline := time.Now().Add(req.safePointWait)
	tried := map[int]bool{}
	var last []threadState
	var lastErr error
	sample := func() ([]threadState, error) {
		ts, err := readThreads(req.pid)
		if err == nil {
			last = ts
		}
		return ts, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cands, err := parkedThreads(req.pid, func() ([]threadState, error) {
			ts, err := sample()
			time.Sleep(sampleGap)
			return ts, err
		}, tried)
		if err != nil {
			return nil, fmt.Errorf("reading the threads of pid %d: %w", req.pid, err)
		}
		for _, c := range cands {
			if req.only != nil && !req.only(c.tid, c.nr) {
				continue
			}
			if !stackRoom(maps, c.sp) {
				tried[c.tid] = true
				continue
			}
			t, err := seize(c, req.pid, stopWait)
			if err == nil {
				return t, nil
			}
			if !errors.Is(err, errWoke) {
				return nil, err
			}
			// It woke up between our look and the stop: try another.
			lastErr = err
			tried[c.tid] = true
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("no thread of pid %d stayed parked in a blocking system call within %v, so none can be stopped safely for the injection (threads: %s)",
				req.pid, req.safePointWait, describeThreads(last))
			if lastErr != nil {
				msg += "; last attempt: " + lastErr.Error()
			}
			return nil, fmt.Errorf("%s: %w", msg, ErrNoSafePoint)
		}
		if len(tried) > 0 && len(tried) >= len(last) {
			tried = map[int]bool{} // every thread tried once: allow them again
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stackRoom says whether the thread with stack pointer sp has at least minStack below it: a
// thread stack is one mapping; the main stack ([stack]) grows on demand.
func stackRoom(maps []pyproc.Mapping, sp uint64) bool {
	for _, m := range maps {
		if sp >= m.Start && sp < m.End {
			return m.Path == "[stack]" || sp-m.Start >= minStack
		}
	}
	return false
}
