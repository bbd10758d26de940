"""vLLM-shaped fake of the V1 GPUModelRunner (signatures as vLLM 0.33)."""
from vllm.compilation.cuda_graph import CUDAGraphOptions, CUDAGraphWrapper
from vllm.config.compilation import CUDAGraphMode
from vllm.forward_context import set_forward_context
from vllm.v1.cudagraph_dispatcher import CudagraphDispatcher


class GPUModelRunner:
    def __init__(self, vllm_config=None, device="cpu", model_factory=None):
        self.cudagraph_dispatcher = CudagraphDispatcher()
        self.model_factory = model_factory
        self.model = None
        self.calls = 0
        self.pieces = [CUDAGraphWrapper(lambda: 1, None, CUDAGraphMode.PIECEWISE, CUDAGraphOptions(True)),
                       CUDAGraphWrapper(lambda: 2, None, CUDAGraphMode.PIECEWISE, CUDAGraphOptions(False))]
        self.full = CUDAGraphWrapper(lambda: self._pieces(), None, CUDAGraphMode.FULL)

    def _pieces(self):
        return [p() for p in self.pieces]

    def load_model(self, eep_scale_up=False):
        if self.model_factory is not None:
            self.model = self.model_factory()

    def get_model(self):
        return self.model

    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens_np):
        return None, None, 1

    def _determine_batch_execution_and_padding(self, num_tokens, num_reqs, num_scheduled_tokens_np,
                                               max_num_scheduled_tokens, use_cascade_attn=False,
                                               allow_microbatching=True, force_eager=False,
                                               force_uniform_decode=None, force_has_lora=None,
                                               force_num_active_loras=None, num_encoder_reqs=0):
        uniform = force_uniform_decode if force_uniform_decode is not None else (
            max_num_scheduled_tokens == 1 and num_tokens == num_reqs)
        mode, desc = self.cudagraph_dispatcher.dispatch(
            num_tokens, uniform_decode=uniform, has_lora=bool(force_has_lora),
            num_active_loras=force_num_active_loras or 0,
            invalid_modes={CUDAGraphMode.FULL} if num_encoder_reqs else None)
        if force_eager:
            mode = CUDAGraphMode.NONE
        return mode, desc, False, None, None

    def _execute_mm_encoder(self, scheduler_output):
        return [0 for v in scheduler_output.scheduled_encoder_inputs.values() for _ in v]

    def _model_forward(self, mode):
        if mode == CUDAGraphMode.FULL:
            return self.full()
        return self._pieces()

    def execute_model(self, scheduler_output, intermediate_tensors=None):
        self.calls += 1
        nst = scheduler_output.num_scheduled_tokens
        if not nst:
            return None
        self._prepare_inputs(scheduler_output, list(nst.values()))
        if scheduler_output.scheduled_encoder_inputs:
            self._execute_mm_encoder(scheduler_output)
        mode, desc, *_ = self._determine_batch_execution_and_padding(
            scheduler_output.total_num_scheduled_tokens, len(nst), list(nst.values()), max(nst.values()),
            num_encoder_reqs=len(scheduler_output.scheduled_encoder_inputs))
        with set_forward_context(None, None, cudagraph_runtime_mode=mode, batch_descriptor=desc):
            self._model_forward(mode)
        if self.model is not None:
            self.model.forward_tokens(scheduler_output.total_num_scheduled_tokens)
        return None

    def sample_tokens(self, grammar_output):
        return {}

    def _dummy_run(self, num_tokens, cudagraph_runtime_mode=None, force_attention=False, uniform_decode=False,
                   allow_microbatching=True, skip_eplb=False, is_profile=False, create_mixed_batch=False,
                   remove_lora=True, is_graph_capturing=False, num_active_loras=0, profile_seq_lens=None,
                   randomize_inputs=False):
        mode, desc, *_ = self._determine_batch_execution_and_padding(
            num_tokens, num_tokens if uniform_decode else 1, None, 1 if uniform_decode else num_tokens,
            force_uniform_decode=uniform_decode, force_num_active_loras=num_active_loras)
        if cudagraph_runtime_mode is not None:
            mode = cudagraph_runtime_mode
        with set_forward_context(None, None, cudagraph_runtime_mode=mode, batch_descriptor=desc):
            self._model_forward(mode)

    def profile_cudagraph_memory(self):
        self._dummy_run(16, CUDAGraphMode.PIECEWISE, is_graph_capturing=True)
        for w in self.pieces + [self.full]:
            w.concrete_cudagraph_entries.clear()
        return 0

    def capture_model(self):
        for n in (8, 4):
            self._dummy_run(n, CUDAGraphMode.PIECEWISE, is_graph_capturing=True)
        for n in (4, 2):
            self._dummy_run(n, CUDAGraphMode.FULL, uniform_decode=True, is_graph_capturing=True)
        return 0
