"""A `module:Class` evaluator for the tests: synchronous methods, no network."""


class ConstantEvaluator:
    def __init__(self, score: float = 1.0):
        self.score = float(score)
        self.prepared = False

    def prepare(self, job):
        self.prepared = True

    def run(self, job, server):
        assert self.prepared, "run before prepare"
        return {"score": self.score, "server": server.address}


class VideoEvaluator(ConstantEvaluator):
    """Records a (fake) video where the episode tells it to."""

    video_path = None

    def run(self, job, server):
        with open(self.video_path, "wb") as handle:
            handle.write(f"video of {job.id}".encode())
        return super().run(job, server)
