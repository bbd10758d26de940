"""vLLM-shaped fake of the V2 runner (vllm/v1/worker/gpu/model_runner.py)."""
from vllm.v1.worker.gpu.cudagraph_utils import CudaGraphManager
from vllm.v1.worker.gpu.dp_utils import dispatch_cg_and_sync_dp
from vllm.v1.worker.gpu.mm.encoder_runner import EncoderRunner


class GPUModelRunner:
    def __init__(self, vllm_config=None, device="cpu"):
        self.cudagraph_manager = CudaGraphManager()
        self.encoder_runner = EncoderRunner()
        self.model = None

    def load_model(self, *args, **kwargs):
        pass

    def prepare_inputs(self, scheduler_output, batch_req_state, batch_desc):
        return None

    def execute_model(self, scheduler_output, intermediate_tensors=None, dummy_run=False,
                      skip_attn_for_dummy_run=False, is_profile=False, context_len=0):
        nst = scheduler_output.num_scheduled_tokens
        n = scheduler_output.total_num_scheduled_tokens
        uniform = 1 if nst and all(v == 1 for v in nst.values()) else None
        desc, _ = dispatch_cg_and_sync_dp(self.cudagraph_manager, len(nst), n, uniform, 1, 0)
        self.prepare_inputs(scheduler_output, None, desc)
        if scheduler_output.scheduled_encoder_inputs:
            self.encoder_runner.execute_mm_encoder(
                [("image", x) for v in scheduler_output.scheduled_encoder_inputs.values() for x in v])
        return None

    def sample_tokens(self, grammar_output):
        return {}

    def _dummy_run(self, num_tokens, *args, **kwargs):
        return None

    def capture_model(self, *, profile_only=False):
        def create_forward_fn(desc, warmup=False):
            def fwd(mode):
                return mode
            return fwd
        self.cudagraph_manager.capture(create_forward_fn)
        return 0
