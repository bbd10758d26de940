class EncoderRunner:
    def execute_mm_encoder(self, mm_kwargs):
        return [0 for _ in mm_kwargs]
