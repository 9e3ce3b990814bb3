"""A `module:Class` evaluator for the tests: synchronous methods, no network."""

import time
from pathlib import Path

from flows.evaluators import EvaluationError


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


class GatedEvaluator(ConstantEvaluator):
    """Scripted for the retry-request test: instance 0 fails (not retryable) until the file
    `fail_once` exists, which its first try creates; instance 1 plays until `release` exists."""

    def __init__(self, fail_once: str, release: str, score: float = 1.0):
        super().__init__(score)
        self.fail_once, self.release = Path(fail_once), Path(release)

    def prepare(self, job):
        if job.payload.instance_id == 0 and not self.fail_once.exists():
            self.fail_once.touch()
            raise EvaluationError("scripted failure of the first try")
        super().prepare(job)

    def run(self, job, server):
        deadline = time.monotonic() + 120
        while job.payload.instance_id == 1 and not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return {**super().run(job, server), "success": 1}  # what the campaign's leaderboard ranks


class HungryEvaluator(ConstantEvaluator):
    """Holds `megabytes` of memory (touched, so resident) while it plays, then frees it."""

    def __init__(self, megabytes: int = 100, score: float = 1.0):
        super().__init__(score)
        self.megabytes = int(megabytes)

    def run(self, job, server):
        block = bytearray(self.megabytes * 2**20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        time.sleep(1.2)  # sampled twice a second
        del block
        return super().run(job, server)
