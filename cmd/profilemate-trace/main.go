// Command profilemate-trace tells where the time goes inside a live vLLM inference server:
// CUDA-graph replays with their batch shapes, KV-cache use, MoE experts, prefill/decode GPU
// time, CPU costs, batch utilization and preemptions.
package main

import "os"

func main() { os.Exit(run(os.Args)) }
