package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// discovery keeps the set of vLLM processes on the node, rescanning /proc.
type discovery struct {
	procRoot   string
	podsLogDir string
	allow      Allowlist
	log        *slog.Logger
	m          *metrics

	mu    sync.Mutex
	procs map[int]*Process // by pid; only vLLM trees (and python processes with rings)
	last  time.Time
	// cache of per-process facts that do not change over its life, keyed by pid and start time
	static map[int]*Process
}

func newDiscovery(cfg *Config, m *metrics) *discovery {
	return &discovery{procRoot: cfg.ProcRoot, podsLogDir: cfg.PodsLogDir, allow: cfg.Allow, log: cfg.Log, m: m,
		procs: map[int]*Process{}, static: map[int]*Process{}}
}

// scan walks /proc once: it identifies vLLM processes (by comm and cmdline), python
// processes holding a profilemate ring, and every descendant of either; it logs arrivals
// and departures.
func (d *discovery) scan() {
	ents, err := os.ReadDir(d.procRoot)
	if err != nil {
		d.log.Warn("reading /proc", "err", err)
		return
	}
	type basic struct {
		ppid  int
		start uint64
	}
	all := map[int]basic{}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, ok := procStat(d.procRoot, pid)
		if !ok {
			continue
		}
		all[pid] = basic{ppid, start}
		children[ppid] = append(children[ppid], pid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	// Forget cached facts of processes gone (or pids reused).
	for pid, p := range d.static {
		if b, ok := all[pid]; !ok || b.start != p.StartTick {
			delete(d.static, pid)
		}
	}
	seeds := map[int]bool{}
	for pid, b := range all {
		p := d.static[pid]
		if p == nil {
			p = &Process{Pid: pid, StartTick: b.start, Comm: readComm(d.procRoot, pid), Cmdline: readCmdline(d.procRoot, pid)}
			p.Vllm = looksVllm(p.Comm, p.Cmdline)
			d.static[pid] = p
		} else {
			// vLLM renames its processes after start (setproctitle): reread comm.
			if c := readComm(d.procRoot, pid); c != p.Comm {
				p.Comm, p.Cmdline = c, readCmdline(d.procRoot, pid)
				p.Vllm = p.Vllm || looksVllm(p.Comm, p.Cmdline)
			}
		}
		p.Ppid = b.ppid
		if p.Vllm {
			seeds[pid] = true
		} else if looksPython(p.Comm, p.Cmdline) && !p.Agent && !p.Hook {
			// A python process outside vLLM's names that holds a ring (a `run` of a
			// script with the hook, an agent-preloaded server under another name).
			if a, h := ringSources(pid); a || h {
				seeds[pid] = true
			}
		} else if p.Agent || p.Hook {
			seeds[pid] = true
		}
	}
	// Every descendant of a seed belongs to its tree; the tree's root is the topmost seed.
	next := map[int]*Process{}
	var walk func(pid, root int)
	walk = func(pid, root int) {
		if _, done := next[pid]; done {
			return
		}
		p := d.static[pid]
		if p == nil {
			return
		}
		p.Root = root
		next[pid] = p
		for _, c := range children[pid] {
			walk(c, root)
		}
	}
	var roots []int
	for pid := range seeds {
		if !hasSeedAncestor(pid, seeds, func(p int) int { return all[p].ppid }) {
			roots = append(roots, pid)
		}
	}
	sort.Ints(roots)
	for _, r := range roots {
		walk(r, r)
	}
	for pid, p := range next {
		if !p.Agent || !p.Hook {
			a, h := ringSources(pid)
			p.Agent, p.Hook = p.Agent || a, p.Hook || h
		}
		if !p.Agent && !p.Preloaded && p.Vllm {
			p.Preloaded = mapsAgent(d.procRoot, pid)
		}
		if p.Cgroup == "" {
			b, _ := os.ReadFile(filepath.Join(d.procRoot, strconv.Itoa(pid), "cgroup"))
			p.Pod = parseCgroup(b)
			p.NsPid = readNsPid(d.procRoot, pid)
		}
		p.Role = roleOf(p.Comm, p.Cmdline, pid == p.Root)
	}
	d.resolvePods(next)
	for pid, p := range next {
		if _, ok := d.procs[pid]; !ok {
			d.log.Info("vLLM process appeared", "pid", pid, "ppid", p.Ppid, "role", p.Role, "comm", p.Comm, "agent", p.Agent, "namespace", p.Namespace, "pod", p.PodName)
			d.m.processEvents.WithLabelValues("appeared").Inc()
		}
	}
	for pid, p := range d.procs {
		if _, ok := next[pid]; !ok {
			d.log.Info("vLLM process exited", "pid", pid, "role", p.Role, "comm", p.Comm)
			d.m.processEvents.WithLabelValues("exited").Inc()
		}
	}
	d.procs = next
	d.last = time.Now()
	var nAgent, nHook int
	for _, p := range next {
		if p.Agent {
			nAgent++
		}
		if p.Hook {
			nHook++
		}
	}
	d.m.processes.WithLabelValues("all").Set(float64(len(next)))
	d.m.processes.WithLabelValues("agent").Set(float64(nAgent))
	d.m.processes.WithLabelValues("hook").Set(float64(nHook))
	d.m.processes.WithLabelValues("roots").Set(float64(len(roots)))
}

func hasSeedAncestor(pid int, seeds map[int]bool, ppidOf func(int) int) bool {
	for p, i := ppidOf(pid), 0; p > 1 && i < 128; p, i = ppidOf(p), i+1 {
		if seeds[p] {
			return true
		}
	}
	return false
}

// resolvePods fills namespace and pod name from the kubelet's pod directories (trusted: the
// pod UID comes from the kernel's cgroup path). Only a process whose cgroup names no pod
// falls back to its own POD_NAMESPACE/POD_NAME environment, which it could set to anything;
// NamespaceFrom tells the two apart.
func (d *discovery) resolvePods(procs map[int]*Process) {
	var idx map[string][2]string
	for pid, p := range procs {
		if p.Namespace != "" {
			continue
		}
		if p.PodUID != "" {
			if idx == nil {
				idx = podIndex(d.podsLogDir)
				if idx == nil {
					idx = map[string][2]string{}
				}
			}
			if v, ok := idx[p.PodUID]; ok {
				p.Namespace, p.PodName, p.NamespaceFrom = v[0], v[1], "kubelet"
			}
			continue
		}
		if ns, name := envNamespace(d.procRoot, pid); ns != "" {
			p.Namespace, p.PodName, p.NamespaceFrom = ns, name, "env"
		}
	}
}

// snapshot returns copies of the allowed processes, sorted by pid.
func (d *discovery) snapshot() []Process {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Process, 0, len(d.procs))
	for _, p := range d.procs {
		if d.allow.allows(p) {
			out = append(out, *p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out
}

// lookup returns the process with pid from the last scan.
func (d *discovery) lookup(pid int) (Process, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.procs[pid]
	if !ok {
		return Process{}, false
	}
	return *p, true
}

// allows applies the allowlist to a process.
func (a Allowlist) allows(p *Process) bool {
	if len(a.Namespaces) > 0 && !contains(a.Namespaces, p.Namespace) {
		return false
	}
	if len(a.PodUIDs) > 0 && !contains(a.PodUIDs, p.PodUID) {
		return false
	}
	if len(a.Containers) > 0 {
		ok := false
		for _, c := range a.Containers {
			if c != "" && p.ContainerID != "" && len(c) <= len(p.ContainerID) && p.ContainerID[:len(c)] == c {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if len(a.Cgroups) > 0 {
		ok := false
		for _, c := range a.Cgroups {
			if c != "" && p.Cgroup != "" && strings.Contains(p.Cgroup, c) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	if s == "" {
		return false
	}
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
