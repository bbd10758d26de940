package export

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestPerfettoTrace(t *testing.T) {
	s, err := Load(golden(t))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WritePerfetto(s, &buf); err != nil {
		t.Fatal(err)
	}
	var tr struct {
		Events []map[string]any `json:"traceEvents"`
	}
	if err := json.Unmarshal(buf.Bytes(), &tr); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, buf.String()[:min(2000, buf.Len())])
	}
	count := map[string]int{}
	flowS, flowF := map[string]float64{}, map[string]float64{}
	for _, e := range tr.Events {
		ph, _ := e["ph"].(string)
		cat, _ := e["cat"].(string)
		count[ph+"/"+cat]++
		if ph == "s" {
			flowS[e["id"].(string)] = e["ts"].(float64)
		}
		if ph == "f" {
			flowF[e["id"].(string)] = e["ts"].(float64)
		}
		if e["name"] == "graph 7 FULL,8,8,True,False" && e["ts"].(float64) == 203000 && e["dur"].(float64) != 400 {
			t.Errorf("graph replay event %v", e)
		}
	}
	// 5 forward passes, 2 schedule steps, 10 api calls, 4 kernels, 6 graph replays, 1 memcpy
	for k, v := range map[string]int{"X/forward": 5, "X/scheduler": 2, "X/cuda_api": 10, "X/cuda_graph": 6, "X/memcpy": 1,
		"X/kernel_attention": 1, "X/kernel_ffn": 1, "X/kernel_moe": 1, "X/kernel_communication": 1, "i/preemption": 1, "C/kv": 5} {
		if count[k] != v {
			t.Errorf("%s: %d events, want %d (all: %v)", k, count[k], v, count)
		}
	}
	// every GPU item with an api record (all but corr 41) has one flow from its launch
	if len(flowS) != 10 || len(flowF) != 10 {
		t.Errorf("flows: %d starts, %d ends, want 10", len(flowS), len(flowF))
	}
	if flowS["100:1"] != 102000 || flowF["100:1"] != 105000 {
		t.Errorf("flow 1: %v -> %v", flowS["100:1"], flowF["100:1"])
	}
}
