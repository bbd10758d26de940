import fakecuda


class Scheduler:
    def schedule(self):
        fakecuda.h2d(4096)
        fakecuda.h2d(4096)

    def update_from_output(self):
        fakecuda.launch(1, ptsz=True)
