"""A stand-in Kubernetes cluster for the tests: kmock's API emulator on loopback (no API server
can run here) plus the few things a Job controller and a kubelet would do, scripted by the test.

On a Job's creation it gives the Job a uid and the `controller-uid` pod label (as the API server
does), marks it active and starts one pod whose container prints `lines` to its log; the log
stream stays open until the test ends the pod with `finish(job, succeeded)`, which also gives the
Job its final condition. The emulator runs on its own event loop in a thread, so code under test
(a warm runner in another process, a flow in this one) reaches it over HTTP like a cluster.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import kmock

JOBS = kmock.resource("batch/v1/jobs")
PODS = "v1/pods"


def kubeconfig(server: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server.rstrip("/")}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
        "users": [{"name": "kmock", "user": {"token": "test"}}],
    }


class Emulator(kmock.KubernetesEmulator):
    """kmock plus a scripted Job controller and kubelet."""

    lines: list[str] = []
    ended: dict[str, asyncio.Event]
    created_at: dict[str, float]
    """time.monotonic() of each Job's creation."""

    def pod_name(self, job: str) -> str:
        return f"{job}-x7k2p"

    async def _handle(self, request):
        if request.action != kmock.action.CREATE or request.resource != JOBS:
            return await super()._handle(request)
        job = request.data
        uid = str(uuid.uuid4())
        job["metadata"]["uid"] = uid
        job["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})["controller-uid"] = uid
        job["status"] = {"active": 1}
        response = await super()._handle(request)
        if response.status < 300:
            self.start_pod(job, request.namespace, uid)
        return response

    def start_pod(self, job: dict, namespace: str, uid: str) -> None:
        name, pod = job["metadata"]["name"], self.pod_name(job["metadata"]["name"])
        ended = self.ended[name] = asyncio.Event()
        self.created_at[name] = time.monotonic()
        self.objects[PODS, namespace, pod] = {
            "metadata": {"name": pod, "namespace": namespace, "labels": {"controller-uid": uid, "job-name": name}},
            "spec": job["spec"]["template"]["spec"], "status": {"phase": "Running"},
        }

        async def until_the_container_ends():
            await ended.wait()

        self[f"get /api/v1/namespaces/{namespace}/pods/{pod}/log"] << (
            *(f"{line}\n".encode() for line in self.lines), until_the_container_ends,
        )


class Cluster:
    """`with Cluster(lines) as cluster:` the emulator on loopback at `cluster.url`."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "Cluster":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        self.emulator = Emulator()
        self.emulator.lines = self.lines
        self.emulator.ended, self.emulator.created_at = {}, {}
        await self.emulator.__aenter__()
        self.server = kmock.Server(self.emulator)
        await self.server.__aenter__()
        self.url = str(self.server.url)

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _stop(self) -> None:
        for ended in self.emulator.ended.values():
            ended.set()
        await self.server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def call(self, function, *args):
        """Run `function(*args)` on the emulator's loop and return its result."""

        async def run():
            return function(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def requests(self) -> list[tuple[str, str, object]]:
        """(method, path, body) of every request so far."""
        return self.call(lambda: [(str(r.method).split(".")[-1].upper(), str(r.url.path), r.data) for r in self.emulator])

    def started(self, job: str) -> bool:
        return self.call(lambda: job in self.emulator.ended)

    def objects(self, kind: str, namespace: str) -> dict[str, dict]:
        """The live objects of `kind` ("batch/v1/jobs", "v1/configmaps", "v1/pods") in `namespace`, by name."""
        resource = kmock.resource(kind)

        def read():
            return {name: obj.raw for (res, ns, name), obj in self.emulator.objects.items()
                    if res == resource and ns == namespace and not obj.deleted}

        return self.call(read)

    def finish(self, namespace: str, job: str, succeeded: bool) -> None:
        """The pod's container exits (0 or 1): the Job completes or fails, then the log stream ends."""

        def end():
            condition = {"type": "Complete" if succeeded else "Failed", "status": "True"}
            if not succeeded:
                condition["reason"] = "BackoffLimitExceeded"
            pod = self.emulator.pod_name(job)
            self.emulator.objects[PODS, namespace, pod].patch({"status": {"phase": "Succeeded" if succeeded else "Failed"}})
            status = {"active": 0, "succeeded" if succeeded else "failed": 1, "conditions": [condition]}
            self.emulator.objects[JOBS, namespace, job].patch({"status": status})
            self.emulator.ended[job].set()

        self.call(end)
