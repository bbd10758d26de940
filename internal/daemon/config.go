// Package daemon is the per-node service behind `profilemate-trace daemon`: it discovers the
// vLLM processes of a node (host pid namespace, any container), runs captures on demand (a
// small HTTP API on a unix socket or loopback) and on a schedule, keeps the bundles under a
// retention budget and exports its own Prometheus metrics.
//
// Each capture is one capture.Attach of a process tree into <BundleDir>/<id>/; rings are
// switched back to dormant when it ends (DisableOnFinish), and an agent whose tracer died
// turns itself dormant after PROFILEMATE_ORPHAN_TIMEOUT (docs/record-format.md).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// Defaults, each with its reason.
const (
	// DefaultListen keeps the trigger endpoint on the node: a root-only unix socket.
	DefaultListen = "unix:/run/profilemate-trace/daemon.sock"
	// DefaultBundleDir is the hostPath the DaemonSet mounts for bundles.
	DefaultBundleDir = "/var/lib/profilemate-trace/captures"
	// DefaultRetainSize bounds disk use per node; a 60 s graph-level window of a busy
	// 8-GPU server is tens of MiB, so this keeps hundreds of captures.
	DefaultRetainSize = 10 << 30
	// DefaultRetainAge keeps a week of captures: long enough to look at last week's incident.
	DefaultRetainAge = 7 * 24 * time.Hour
	// DefaultDuration is the window of a request that names none.
	DefaultDuration = 30 * time.Second
	// DefaultMaxDuration refuses windows longer than an hour: a forgotten capture would keep
	// every GPU process of a server collecting.
	DefaultMaxDuration = time.Hour
	// DefaultMaxRunning bounds concurrent captures: one per GPU of an 8-GPU node. Each
	// capture drains its rings every 100 ms and, with eBPF, loads its own tracer (measured
	// ~20 MB RSS and ~22 BPF descriptors each; docs/notes-daemon.md).
	DefaultMaxRunning = 8
	// DefaultScan is how often /proc is walked for vLLM processes coming and going.
	DefaultScan = 2 * time.Second
	// DefaultShutdownTimeout fits in Kubernetes' 30 s default grace period with room for
	// the last bundle to be written.
	DefaultShutdownTimeout = 25 * time.Second
	// DefaultPodsLogDir is where the kubelet keeps one <namespace>_<pod>_<uid> directory per
	// pod: the offline map from a pod UID (in the cgroup path) to its namespace.
	DefaultPodsLogDir = "/var/log/pods"
	// minTokenLen refuses trivially guessable tokens.
	minTokenLen = 16
)

// Config configures a Daemon. Zero values take the defaults above; call Validate.
type Config struct {
	Listen        string // "unix:/path" or "host:port"
	MetricsListen string // optional second listener that serves /metrics only ("" = none)
	Token         string // required when Listen is not loopback or unix
	BundleDir     string
	RetainSize    int64
	RetainAge     time.Duration
	KeepDirs      bool // keep the expanded session directory next to the bundle

	DefaultDuration time.Duration
	MaxDuration     time.Duration
	MaxRunning      int

	Every          time.Duration // periodic windows; 0 = off
	Window         time.Duration
	ScheduleDetail ring.Detail

	Scan        time.Duration
	PodsLogDir  string
	Allow       Allowlist
	AnyProcess  bool // allow captures of processes not recognised as vLLM
	ProcRoot    string
	ShutdownMax time.Duration

	// OverheadPerRecord is the agent CPU cost assumed per record for the overhead estimate
	// metric (the design budget: ≤ 1 µs per kernel record beyond CUPTI's own).
	OverheadPerRecord time.Duration

	// Extra is handed to capture.Attach (the eBPF tracer); nil = rings only.
	Extra ExtraFunc
	Log   *slog.Logger
}

// ExtraFunc is capture.AttachConfig.Extra.
type ExtraFunc = func(ctx context.Context, pid int, create func(name string) (io.WriteCloser, error)) (stop func() error, err error)

// Allowlist restricts which processes may be listed and captured. Every non-empty list must
// match (AND across lists, OR within one). An empty Allowlist allows everything.
type Allowlist struct {
	Namespaces []string // Kubernetes namespace of the process's pod
	PodUIDs    []string
	Containers []string // container id prefixes (as in the cgroup path)
	Cgroups    []string // substrings of the process's cgroup path
}

// Empty reports whether no restriction is configured.
func (a Allowlist) Empty() bool {
	return len(a.Namespaces) == 0 && len(a.PodUIDs) == 0 && len(a.Containers) == 0 && len(a.Cgroups) == 0
}

// ErrConfig wraps every configuration error (a usage error for the CLI).
var ErrConfig = errors.New("invalid daemon configuration")

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.BundleDir == "" {
		c.BundleDir = DefaultBundleDir
	}
	if c.RetainSize == 0 {
		c.RetainSize = DefaultRetainSize
	}
	if c.RetainAge == 0 {
		c.RetainAge = DefaultRetainAge
	}
	if c.DefaultDuration == 0 {
		c.DefaultDuration = DefaultDuration
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	if c.MaxRunning == 0 {
		c.MaxRunning = DefaultMaxRunning
	}
	if c.Scan == 0 {
		c.Scan = DefaultScan
	}
	if c.PodsLogDir == "" {
		c.PodsLogDir = DefaultPodsLogDir
	}
	if c.ProcRoot == "" {
		c.ProcRoot = "/proc"
	}
	if c.ShutdownMax == 0 {
		c.ShutdownMax = DefaultShutdownTimeout
	}
	if c.OverheadPerRecord == 0 {
		c.OverheadPerRecord = time.Microsecond
	}
	if c.ScheduleDetail == 0 {
		c.ScheduleDetail = ring.DetailGraph
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate fills defaults and checks the configuration before anything is opened.
func (c *Config) Validate() error {
	c.defaults()
	exposed, err := listenExposed(c.Listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", ErrConfig, c.Listen, err)
	}
	if exposed && c.Token == "" {
		return fmt.Errorf("%w: --listen %s is reachable from other hosts; give --token-file (clients send it as \"Authorization: Bearer <token>\") or listen on loopback or a unix socket", ErrConfig, c.Listen)
	}
	if c.Token != "" && len(c.Token) < minTokenLen {
		return fmt.Errorf("%w: the token is %d bytes; use at least %d (e.g. head -c 32 /dev/urandom | base64)", ErrConfig, len(c.Token), minTokenLen)
	}
	if c.MetricsListen != "" {
		if _, err := listenExposed(c.MetricsListen); err != nil {
			return fmt.Errorf("%w: --metrics-listen %q: %v", ErrConfig, c.MetricsListen, err)
		}
	}
	if !strings.HasPrefix(c.BundleDir, "/") {
		return fmt.Errorf("%w: --bundle-dir %q must be an absolute path", ErrConfig, c.BundleDir)
	}
	if c.RetainSize < 0 || c.RetainAge < 0 {
		return fmt.Errorf("%w: retention limits must be positive", ErrConfig)
	}
	if c.DefaultDuration <= 0 || c.MaxDuration <= 0 || c.DefaultDuration > c.MaxDuration {
		return fmt.Errorf("%w: default duration %s must be positive and at most --max-duration %s", ErrConfig, c.DefaultDuration, c.MaxDuration)
	}
	if c.MaxRunning < 1 {
		return fmt.Errorf("%w: --max-running must be at least 1", ErrConfig)
	}
	if c.Every < 0 || c.Window < 0 {
		return fmt.Errorf("%w: --every and --window must be positive", ErrConfig)
	}
	if c.Every > 0 {
		if c.Window <= 0 {
			return fmt.Errorf("%w: --every needs --window (e.g. --every 30m --window 60s)", ErrConfig)
		}
		if c.Window >= c.Every {
			return fmt.Errorf("%w: --window %s must be shorter than --every %s", ErrConfig, c.Window, c.Every)
		}
		if c.Window > c.MaxDuration {
			return fmt.Errorf("%w: --window %s exceeds --max-duration %s", ErrConfig, c.Window, c.MaxDuration)
		}
	} else if c.Window > 0 {
		return fmt.Errorf("%w: --window needs --every", ErrConfig)
	}
	if c.Scan < 100*time.Millisecond {
		return fmt.Errorf("%w: --scan-interval %s is too short (minimum 100ms)", ErrConfig, c.Scan)
	}
	return nil
}

// listenExposed parses a listen address and says whether other hosts could reach it.
func listenExposed(addr string) (bool, error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return false, errors.New("a unix socket path must be absolute (unix:/run/…)")
		}
		return false, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if port == "" {
		return false, errors.New("missing port")
	}
	if host == "localhost" {
		return false, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false, fmt.Errorf("host %q: give an IP address (127.0.0.1, ::1, 0.0.0.0) so exposure is explicit", host)
	}
	return !ip.IsLoopback(), nil
}

// ReadToken reads a token file: it must not be readable by group or others.
func ReadToken(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%w: token file %s has mode %04o; make it 0600 or 0400", ErrConfig, path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
