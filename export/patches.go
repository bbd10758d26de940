package export

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Patch is the last reported state of one Python-hook patch in one process: metadata.json
// lists every patch, so a target missing in this vLLM version is visible, never silent.
type Patch struct {
	Pid    int    `json:"pid"`
	Name   string `json:"name"`
	Status string `json:"status"` // installed, unavailable, disabled, failed
	Errors uint32 `json:"errors"` // exceptions the patch swallowed
	Reason string `json:"reason,omitempty"`
}

var patchStatus = map[uint32]string{1: "installed", 2: "unavailable", 3: "disabled", 4: "failed"}

// Patches returns the last py_patch_status of every (process, patch), sorted.
func Patches(s *Session) []Patch {
	last := map[[2]string]Patch{}
	for _, st := range s.Streams {
		for _, p := range st.PyPatches {
			name, reason, _ := strings.Cut(string(p.Text), "\x00") // name NUL reason
			status := patchStatus[p.Status]
			if status == "" {
				status = "unknown"
			}
			key := [2]string{itoa(st.Meta.Pid), name}
			last[key] = Patch{Pid: st.Meta.Pid, Name: name, Status: status, Errors: p.Errors, Reason: reason}
		}
	}
	out := make([]Patch, 0, len(last))
	for _, p := range last {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pid != out[j].Pid {
			return out[i].Pid < out[j].Pid
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// completeMetadata makes sure dir/metadata.json exists and lists the hook's patches. A session
// written by the hook alone (no tracer: raw/ only) gets a metadata.json synthesised from its
// streams, with mode "hook-only".
func completeMetadata(s *Session, dir string) error {
	p := filepath.Join(dir, "metadata.json")
	md := map[string]any{}
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &md); err != nil {
			return nil // keep an unreadable file as it is; Load already warned
		}
	} else {
		md["tool"] = "profilemate-trace"
		md["session"] = s.Name
		md["mode"] = "hook-only"
		md["clock"] = "CLOCK_MONOTONIC"
		md["start_monotonic_ns"] = s.StartNs
		var streams []map[string]any
		sources := map[string]string{"cupti": "no stream", "pyhook": "no stream", "ebpf": "no stream"}
		for _, st := range s.Streams {
			streams = append(streams, map[string]any{"file": st.File, "source": st.Meta.Source, "pid": st.Meta.Pid, "comm": st.Meta.Comm})
			sources[st.Meta.Source] = "captured"
		}
		md["streams"] = streams
		md["sources"] = sources
		md["warnings"] = []string{"no tracer ran: written from the raw streams alone (no GPU details, no drop counts from the tracer)"}
	}
	md["pyhook_patches"] = Patches(s)
	b, err := json.MarshalIndent(md, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
