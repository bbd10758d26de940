// The package doc is in pep768.go; docs/notes-inject.md tells how the ptrace path works.
//
// Inject stages a copy of both in the target's mount namespace, loads them at a safe point —
// through CPython's PEP 768 remote execution (3.14+), or through ptrace on one thread parked in
// a blocking system call (opt-in) — and returns an Injection whose Detach tells the injected
// producers to detach and removes the staging directory.
package inject

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Method is how the agent is loaded.
type Method string

// Methods (the values of attach --inject).
const (
	MethodNever      Method = "never"       // load nothing (attach uses preloaded agents only)
	MethodAuto       Method = "auto"        // PEP 768 when the target runs CPython ≥ 3.14, else refuse
	MethodPtrace     Method = "ptrace"      // stop one parked thread and call dlopen on it
	MethodRemoteExec Method = "remote-exec" // PEP 768 (sys.remote_exec's protocol)
)

// ParseMethod parses an --inject value.
func ParseMethod(s string) (Method, error) {
	switch m := Method(s); m {
	case MethodNever, MethodAuto, MethodPtrace, MethodRemoteExec:
		return m, nil
	case "":
		return MethodNever, nil
	}
	return "", fmt.Errorf("--inject %q: want never, auto, ptrace or remote-exec", s)
}

// Names shared with the agent and the loader.
const (
	agentName   = "libprofilemate.so"
	stagePrefix = "profilemate-inject-"
	startSymbol = "pm_inject_start"
)

// Defaults.
const (
	// DefaultSafePointWait bounds the search for a thread parked in a blocking system call: a
	// serving process has idle threads (event loops, waits on locks or queues) at any moment;
	// one whose every thread computes for this long is not interrupted at all.
	DefaultSafePointWait = 3 * time.Second
	// DefaultRemoteExecWait bounds the wait for CPython to take a PEP 768 request: a serving
	// interpreter runs bytecode many times a second.
	DefaultRemoteExecWait = 10 * time.Second
	// DefaultDetachWait bounds the wait for the injected producers' acknowledgements: the agent
	// flushes and unsubscribes, which takes well under a second.
	DefaultDetachWait = 5 * time.Second
)

// ErrNoSafePoint is wrapped by the refusal when no thread stayed parked in a blocking call.
var ErrNoSafePoint = errors.New("no safe point")

// ErrRefused is wrapped when the method cannot be used on the target (auto on CPython < 3.14).
var ErrRefused = errors.New("injection refused")

// ErrNotSupported is wrapped when this platform or the target cannot be injected at all.
var ErrNotSupported = errors.New("injection not supported")

// Options configure Inject.
type Options struct {
	Method Method
	Agent  string // libprofilemate.so on this host
	PyHook string // directory holding the profilemate_trace package; "" = agent only
	// Start is inject.conf's start: none (default: dormant until the tracer enables), graph, nodes.
	Start string
	// SafePointWait bounds the search for a parked thread (ptrace); 0 = DefaultSafePointWait.
	SafePointWait time.Duration
	Log           *slog.Logger
	// Warn, if set, receives messages for the user while a step takes long.
	Warn func(string)
}

// LoadResult is what one ptrace load did.
type LoadResult struct {
	Tid           int
	Syscall       string        // the system call the thread was parked in
	ThreadStopped time.Duration // from its stop to its release
	Reused        string        // path of an agent copy already mapped (only pm_inject_start was called)
	StartResult   int           // pm_inject_start's return: 0 started, 1 already running
	Started       bool          // pm_inject_start returned 0 or 1
}

type loadRequest struct {
	pid           int
	lib, conf     string // as the target sees them
	libInode      uint64
	safePointWait time.Duration
	warn          func(string)
	only          func(tid, nr int) bool // tests: restrict the threads considered
}

// Process is the outcome for one process (metadata.json "injection.processes").
type Process struct {
	Pid     int    `json:"pid"`
	Method  string `json:"method"` // ptrace, remote-exec, preloaded, skipped
	Python  string `json:"python,omitempty"`
	Skipped string `json:"skipped,omitempty"`
	// Tid and Syscall: the thread used by ptrace and the call it was parked in.
	Tid     int    `json:"tid,omitempty"`
	Syscall string `json:"syscall,omitempty"`
	// LoadMs: staging to the return of the load (ptrace: dlopen and pm_inject_start done;
	// remote-exec: the request handed to the interpreter).
	LoadMs float64 `json:"load_ms"`
	// ThreadStoppedMs: how long the ptrace thread was held stopped (ptrace only).
	ThreadStoppedMs float64 `json:"thread_stopped_ms,omitempty"`
	// AgentReused: a copy from an earlier injection was still mapped; only pm_inject_start ran.
	AgentReused bool   `json:"agent_reused,omitempty"`
	StartResult *int   `json:"start_result,omitempty"`
	StagingDir  string `json:"staging_dir,omitempty"`
	// FirstEnableStallMs is the time the agent's first enable blocked, as it published it.
	FirstEnableStallMs *float64 `json:"first_enable_stall_ms,omitempty"`
	// Detach: acknowledged, or what went wrong.
	Detach string `json:"detach,omitempty"`

	startedNs uint64
	stage     *Staging
}

// Injection is the result of Inject (metadata.json "injection").
type Injection struct {
	Requested      Method     `json:"requested"`
	Processes      []*Process `json:"processes"`
	StagingRemoved bool       `json:"staging_removed"`
	log            *slog.Logger
	logs           []string
}

// Injected returns the processes something was loaded into.
func (inj *Injection) Injected() []*Process {
	if inj == nil {
		return nil
	}
	var out []*Process
	for _, p := range inj.Processes {
		if p.Method == string(MethodPtrace) || p.Method == string(MethodRemoteExec) {
			out = append(out, p)
		}
	}
	return out
}

// Logs returns the injected-mode log lines of every staged process (the agent and the hook
// write there, since the target's stderr is not ours), prefixed with the pid; after Detach, as
// they were just before the staging directories were removed.
func (inj *Injection) Logs() []string {
	if inj.logs != nil {
		return inj.logs
	}
	return inj.readLogs()
}

func (inj *Injection) readLogs() []string {
	out := []string{}
	for _, p := range inj.Processes {
		for _, l := range strings.Split(strings.TrimSpace(p.stage.ReadLog(8<<10)), "\n") {
			if l != "" {
				out = append(out, fmt.Sprintf("pid %d (injected): %s", p.Pid, l))
			}
		}
	}
	return out
}
