import torch


class Scheduler:
    def __init__(self, dev):
        self.pinned = torch.arange(64, dtype=torch.int32).pin_memory()
        self.dev = dev

    def schedule(self):
        # token ids to the GPU: H2D from pinned memory (cuMemcpyHtoDAsync_v2)
        return self.pinned.to(self.dev, non_blocking=True)

    def update_from_output(self, out):
        return out.add_(1)
