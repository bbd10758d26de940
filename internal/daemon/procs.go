package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/profilemate/profilemate-trace/internal/ring"
)

// Process is one process of the node as the daemon sees it (host pid namespace).
type Process struct {
	Pid       int      `json:"pid"`
	Ppid      int      `json:"ppid"`
	NsPid     int      `json:"ns_pid,omitempty"` // pid inside its container, when different
	Comm      string   `json:"comm"`
	Cmdline   []string `json:"cmdline,omitempty"`
	Role      string   `json:"role"` // server, engine-core, worker, child
	Root      int      `json:"root"` // the top vLLM process of its tree
	Vllm      bool     `json:"vllm"` // recognised as vLLM by comm/cmdline
	Agent     bool     `json:"agent"`
	Hook      bool     `json:"hook"`
	Preloaded bool     `json:"agent_preloaded,omitempty"` // libprofilemate.so mapped, ring not created yet (no cuInit)
	StartTick uint64   `json:"-"`
	Pod
	Capture string `json:"capture,omitempty"` // id of the capture running on it
}

// Pod is what the cgroup path and the kubelet's directories tell about a process's pod.
type Pod struct {
	Cgroup      string `json:"cgroup,omitempty"`
	PodUID      string `json:"pod_uid,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	PodName     string `json:"pod,omitempty"`
	// NamespaceFrom is "kubelet" (pod UID of the cgroup path found in --pods-log-dir) or
	// "env" (POD_NAMESPACE of a process whose cgroup names no pod: self-declared).
	NamespaceFrom string `json:"namespace_from,omitempty"`
}

var (
	// Pod UIDs appear in cgroup paths as pod<uid> with '-' (cgroupfs) or '_' (systemd).
	podUIDRe = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)
	// Container ids: the last 64-hex component, with an optional runtime prefix
	// (docker-, cri-containerd-, crio-, libpod-) and .scope suffix.
	containerRe = regexp.MustCompile(`(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$`)
)

// parseCgroup returns the cgroup path of a /proc/PID/cgroup file (the v2 "0::" line, else
// the first v1 line that names a pod) and the pod UID and container id found in it.
func parseCgroup(b []byte) Pod {
	var p Pod
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		if parts[0] == "0" && parts[1] == "" {
			p.Cgroup = path
			break
		}
		if p.Cgroup == "" || (!podUIDRe.MatchString(p.Cgroup) && podUIDRe.MatchString(path)) {
			p.Cgroup = path
		}
	}
	if m := podUIDRe.FindStringSubmatch(p.Cgroup); m != nil {
		p.PodUID = strings.ReplaceAll(m[1], "_", "-")
	}
	if m := containerRe.FindStringSubmatch(p.Cgroup); m != nil {
		p.ContainerID = m[1]
	}
	return p
}

// podIndex maps pod UIDs to namespace and name from the kubelet's log directories
// (/var/log/pods/<namespace>_<name>_<uid>). Namespaces and pod names cannot contain '_'.
func podIndex(dir string) map[string][2]string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make(map[string][2]string, len(ents))
	for _, e := range ents {
		f := strings.Split(e.Name(), "_")
		if len(f) != 3 || !e.IsDir() {
			continue
		}
		out[f[2]] = [2]string{f[0], f[1]}
	}
	return out
}

// envNamespace reads POD_NAMESPACE / POD_NAME from a process's environment (the downward
// API variables docs/kubernetes.md asks vLLM pods to set).
func envNamespace(procRoot string, pid int) (ns, name string) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "environ"))
	if err != nil {
		return "", ""
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("POD_NAMESPACE=")); ok {
			ns = string(v)
		} else if v, ok := bytes.CutPrefix(kv, []byte("POD_NAME=")); ok {
			name = string(v)
		}
	}
	return ns, name
}

// procStat reads ppid and the start time (clock ticks since boot) from /proc/PID/stat.
func procStat(procRoot string, pid int) (ppid int, start uint64, ok bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, start, true
}

func readComm(procRoot string, pid int) string {
	b, _ := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}

func readCmdline(procRoot string, pid int) []string {
	b, _ := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func readNsPid(procRoot string, pid int) int {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) < 2 {
				return 0
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// looksVllm says whether comm/cmdline name a vLLM server: the process titles vLLM sets
// (VLLM::EngineCore, VLLM::Worker…), the `vllm` console script (`vllm serve`, run as
// "python3 /usr/local/bin/vllm serve …"), `python -m vllm.…`, or a python script whose name
// contains vllm. A shell or pip whose arguments mention vllm is not one.
func looksVllm(comm string, cmdline []string) bool {
	if strings.HasPrefix(comm, "VLLM::") {
		return true
	}
	if len(cmdline) == 0 {
		return false
	}
	exe := filepath.Base(cmdline[0])
	if exe == "vllm" || strings.HasPrefix(exe, "VLLM::") {
		return true
	}
	if !strings.HasPrefix(exe, "python") {
		return false
	}
	for i := 1; i < len(cmdline) && i < 8; i++ {
		a := cmdline[i]
		switch {
		case a == "-m" && i+1 < len(cmdline):
			return cmdline[i+1] == "vllm" || strings.HasPrefix(cmdline[i+1], "vllm.")
		case a == "-c":
			return false
		case a == "-X" || a == "-W": // options with a separate argument
			i++
		case strings.HasPrefix(a, "-"):
			continue
		default: // the script
			return strings.Contains(strings.ToLower(filepath.Base(a)), "vllm")
		}
	}
	return false
}

// looksPython says whether a process could carry the hook or the agent worth a look at its
// descriptors (python interpreters, and torch's renamed main threads).
func looksPython(comm string, cmdline []string) bool {
	if strings.HasPrefix(comm, "python") || strings.HasPrefix(comm, "pt_") || strings.HasPrefix(comm, "ray::") {
		return true
	}
	return len(cmdline) > 0 && strings.HasPrefix(filepath.Base(cmdline[0]), "python")
}

func roleOf(comm string, cmdline []string, isRoot bool) string {
	s := comm + " " + strings.Join(cmdline, " ")
	switch {
	case strings.Contains(s, "EngineCor"):
		return "engine-core"
	case strings.Contains(s, "Worker"):
		return "worker"
	case isRoot:
		return "server"
	}
	return "child"
}

// mapsAgent reports whether the process mapped libprofilemate.so (preloaded, dormant, and
// waiting for its first cuInit to create the ring).
func mapsAgent(procRoot string, pid int) bool {
	f, err := os.Open(filepath.Join(procRoot, strconv.Itoa(pid), "maps"))
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	var carry []byte
	for {
		n, err := f.Read(buf)
		chunk := append(carry, buf[:n]...)
		if bytes.Contains(chunk, []byte("libprofilemate")) {
			return true
		}
		if len(chunk) > 32 {
			carry = append(carry[:0], chunk[len(chunk)-32:]...)
		}
		if err != nil {
			return false
		}
	}
}

// ringSources lists the profilemate rings a process holds.
func ringSources(pid int) (agent, hook bool) {
	found, err := ring.Find(pid)
	if err != nil {
		return false, false
	}
	for _, f := range found {
		switch f.Source {
		case "cupti":
			agent = true
		case "pyhook":
			hook = true
		}
	}
	return agent, hook
}
