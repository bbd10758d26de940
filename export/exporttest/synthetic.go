package exporttest

import (
	"fmt"
	"math/rand/v2"

	"github.com/profilemate/profilemate-trace/internal/record"
)

// SyntheticOptions shape a generated vLLM-like session.
type SyntheticOptions struct {
	Steps          int // forward passes
	PrefillEvery   int // one eager prefill step every N steps (others: one FULL graph replay)
	PrefillKernels int // eager kernels per prefill step
	DecodeKernels  int // eager kernels per decode step besides the graph replay
	Layers         int // MoE layers (0: dense)
	Experts        int
	Seed           uint64
	// StableDurations: each kernel name has its own duration with ±2 % jitter and launches
	// follow each other at a steady pace (as on a real GPU); otherwise durations and gaps
	// are uniformly random (an upper bound on entropy, so a pessimistic bundle size).
	StableDurations bool
}

// DefaultSynthetic is a mid-sized MoE serving session.
var DefaultSynthetic = SyntheticOptions{Steps: 2000, PrefillEvery: 10, PrefillKernels: 120, DecodeKernels: 4, Layers: 4, Experts: 8, Seed: 1}

var synthKernels = []string{
	"_ZN5flash13flash_fwd_kernelILi128ELb1EEEvNS_6ParamsE", "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT",
	"_ZN4vllm18act_and_mul_kernelIN3c108BFloat16EXadL_ZNS_11silu_kernelIS2_EET_RKS4_EELb1EEEvPS4_PS5_i",
	"fused_moe_kernel", "_ZN4vllm25moe_align_block_size_kernelIiEEvPKT_PiS4_S4_iimmm",
	"ncclDevKernel_AllReduce_Sum_bf16_RING_LL", "_ZN4vllm15rms_norm_kernelIN3c108BFloat16ELi8ELi4EEEvPT_PKS3_S6_fii",
	"_ZN4vllm24reshape_and_cache_flash_kernelIN3c108BFloat16ES2_LNS_18Fp8KVCacheDataTypeE0EEEvPKT_S7_PT0_S9_PKliiiiiPKfSD_",
	"_ZN4vllm23rotary_embedding_kernelIN3c108BFloat16ELb1EEEvPKlPT_S6_PKS5_iiiii",
	"_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEESt5arrayIPcLm1EEEEviT0_T1_",
}

// Synthetic generates a session: worker pid 100 (CUPTI, hook, eBPF), scheduler pid 200
// (hook). It returns the builder and the number of raw events.
func Synthetic(o SyntheticOptions) (*Builder, int) {
	rng := rand.New(rand.NewPCG(o.Seed, 7))
	const t0 = uint64(1_000_000_000_000)
	b := New(t0)
	cu, py, eb, sp := b.Stream(100, "cupti"), b.Stream(100, "pyhook"), b.Stream(100, "ebpf"), b.Stream(200, "pyhook")
	for i, n := range synthKernels {
		cu.Add(Name(uint32(i+1), n))
	}
	eb.Add(record.AppendEbpfPhaseDef(nil, &record.EbpfPhaseDef{Phase: 1, Name: []byte("forward\tGPUModelRunner.execute_model\t")}))
	const total = 4096
	sp.Add(record.AppendPyKVConfig(nil, &record.PyKVConfig{TsNS: t0, NumGPUBlocks: total + 1, BlockSize: 16, EnableCaching: 1}))
	for g, tok := range []uint32{8, 16, 32, 64, 128, 256} {
		py.Add(record.AppendPyGraphCapture(nil, &record.PyGraphCapture{StartNS: t0 + uint64(g)*20_000_000, EndNS: t0 + uint64(g)*20_000_000 + 15_000_000,
			TID: 11, RuntimeMode: 2, NumTokens: tok, NumReqs: int32(tok), Flags: 1, Source: 1}))
	}
	t := t0 + 500_000_000
	corr := uint32(1)
	free := uint32(total)
	var live [][]uint32
	nextBlock := uint32(1)
	var freed []uint32
	for step := 1; step <= o.Steps; step++ {
		prefill := o.PrefillEvery > 0 && step%o.PrefillEvery == 1
		// scheduler
		size := rng.IntN(6)
		tok := uint32(8 << size)
		phase := uint32(2)
		if prefill {
			tok, phase = 2048, 1
		}
		sp.Add(record.AppendPySchedStep(nil, &record.PySchedStep{StartNS: t, EndNS: t + 150_000, StepID: uint64(step), TID: 5, ScheduledTokens: tok,
			ScheduledReqs: min(tok, 256), MaxNumBatchedTokens: 8192, MaxNumSeqs: 256, NumWaiting: uint32(rng.IntN(4)), NumRunning: min(tok, 256), KVNumFree: free}),
			record.AppendPyCPUScope(nil, &record.PyCPUScope{StartNS: t, EndNS: t + 150_000, StepID: uint64(step), TID: 5, Scope: 1, Name: []byte("schedule")}))
		// KV: allocate blocks for a new request on prefill steps, free old ones
		if prefill {
			ids := make([]uint32, 16)
			for i := range ids {
				if len(freed) > 0 {
					id := freed[0]
					freed = freed[1:]
					sp.Add(KV(4, 0, free, 0, t+100_000, id))
					ids[i] = id
				} else {
					ids[i] = nextBlock
					nextBlock++
				}
			}
			free -= 16
			sp.Add(KV(1, 0, free, 0, t+100_000, ids...))
			live = append(live, ids)
			if len(live) > 150 || (len(live) > 20 && rng.IntN(3) == 0) {
				old := live[0]
				live = live[1:]
				free += 16
				sp.Add(KV(2, 0, free, 0, t+120_000, old...))
				freed = append(freed, old...)
			}
		}
		// worker forward pass
		fs := t + 200_000
		py.Add(Dispatch(uint64(step), 11, map[bool]uint32{true: 0, false: 2}[prefill], tok, int32(min(tok, 256)), !prefill, fs+10_000))
		cpuT := fs + 20_000
		gpuT := fs + 300_000
		nk := o.DecodeKernels
		if prefill {
			nk = o.PrefillKernels
		} else {
			cu.Add(API(corr, 11, 514, cpuT, cpuT+8_000))
			eb.Add(record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: cpuT + 2_000, PID: 100, TID: 11, API: 5, Phase: 1}))
			d := uint64(3_000_000 + rng.IntN(400_000))
			cu.Add(Graph(corr, uint32(1+size), gpuT, gpuT+d)) // one graph per captured size
			gpuT += d + 2_000
			corr++
			cpuT += 10_000
		}
		for k := 0; k < nk; k++ {
			name := uint32(1 + rng.IntN(len(synthKernels)))
			adur := 3_000 + uint64(rng.IntN(500))
			if o.StableDurations {
				adur = 3_000 + uint64(rng.IntN(64))
			}
			cu.Add(API(corr, 11, 307, cpuT, cpuT+adur))
			eb.Add(record.AppendEbpfLaunch(nil, &record.EbpfLaunch{TsNS: cpuT + 1_000, PID: 100, TID: 11, API: 1, Phase: 1}))
			d := uint64(5_000 + rng.IntN(60_000))
			gap, cgap := uint64(1_000+rng.IntN(2_000)), 4_000+uint64(rng.IntN(1_000))
			if o.StableDurations {
				base := uint64(5_000 + 6_000*uint64(name))
				d = base - base/50 + uint64(rng.IntN(int(base/25)+1))
				gap, cgap = 1_500+uint64(rng.IntN(64)), 4_500+uint64(rng.IntN(64))
			}
			cu.Add(Kernel(corr, name, gpuT, gpuT+d))
			gpuT += d + gap
			cpuT += cgap
			corr++
		}
		fe := max(cpuT+20_000, fs+100_000)
		py.Add(Forward(uint64(step), 11, phase, tok, min(tok, 256), fs, fe))
		// MoE read-back every 50 steps
		if o.Layers > 0 && step%50 == 0 {
			for l := 0; l < o.Layers; l++ {
				counts := make([]uint64, o.Experts)
				for e := range counts {
					counts[e] = uint64(1000 + rng.IntN(500) + e*100*l)
				}
				py.Add(record.AppendPyMOEExpertCounts(nil, &record.PyMOEExpertCounts{TsNS: t, WindowStartNS: t - 50_000_000, LayerIdx: uint32(l), NumExperts: uint32(o.Experts), TopK: 2, Counts: U64s(counts...)}))
				py.Add(record.AppendPyMOECoselect(nil, &record.PyMOECoselect{TsNS: t, LayerIdx: uint32(l), NumExperts: uint32(o.Experts), Pairs: U32s(0, 1, uint32(100+rng.IntN(50)), 2, 3, uint32(80+rng.IntN(50)))}))
				py.Add(record.AppendPyMOEWeightHist(nil, &record.PyMOEWeightHist{TsNS: t, Lo: 0, Hi: 1, LayerIdx: uint32(l), NumBins: 10, Bins: U64s(1, 5, 20, 60, 90, 80, 40, 15, 5, 1)}))
			}
		}
		if step%500 == 250 {
			rid := []byte(fmt.Sprintf("req-%d", step))
			sp.Add(record.AppendPyPreempt(nil, &record.PyPreempt{TsNS: t + 140_000, StepID: uint64(step), ReqHash: uint64(step), TID: 5, Reason: 1, NumComputedTokens: 300, NumPreemptions: 1, ReqID: rid}))
		}
		t = max(gpuT, fe) + 100_000
	}
	n := 0
	for _, st := range b.streams {
		n += st.N
	}
	return b, n
}
