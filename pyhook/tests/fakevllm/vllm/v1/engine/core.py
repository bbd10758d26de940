class EngineCore:
    def __init__(self, scheduler, model_executor):
        self.scheduler = scheduler
        self.model_executor = model_executor
        self.step_fn = self.step

    def step(self):
        so = self.scheduler.schedule()
        out = self.model_executor.execute_model(so)
        self.scheduler.update_from_output(so, out)
        return out, so.total_num_scheduled_tokens > 0
