import threading

import fakecuda
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.sample.sampler import Sampler
from vllm.v1.worker.gpu_model_runner import GPUModelRunner


class EngineCore:
    def __init__(self, depth=20):
        self.scheduler = Scheduler()
        self.runner = GPUModelRunner(depth)

    def step(self):
        self.scheduler.schedule()
        self.runner.execute_model()
        # A thread born inside the step (after attach): its thread state is found through the
        # gilstate key. Its launch is in Sampler.forward, not in engine.step (own stack).
        t = threading.Thread(target=Sampler().forward)
        t.start()
        t.join()
        self.runner.sample_tokens()
        self.scheduler.update_from_output()
        fakecuda.ctx_sync()
