"""Jobs run again: retry requests (evaltui's, `rerun_requests.py`) and runs rerun from outside
the campaign (the Prefect UI's Retry, `settled.py`), as the loop (`loop.py`) follows them."""

from __future__ import annotations

from uuid import UUID

from flows.campaign.dispatch import Ticket
from flows.campaign.outcomes import Outcome
from flows.campaign.rerun_requests import RetryRequest, drop_request, pending_requests


class Reruns:
    """The part of `JobLoop` that runs settled jobs again; it uses the loop's tally, dispatcher,
    kind, history and settled runs."""

    async def read_retry_requests(self) -> int:
        """Apply the retry requests (evaltui's) for jobs this campaign has settled as failed or
        cancelled; a request for a job still queued or in flight waits until it settles. How
        many wait."""
        waiting = 0
        for name, request in await pending_requests(self.client, self.s.name):
            job_id = request.job_id
            if job_id in self.by_id and job_id not in self.tally.failures and job_id not in self.tally.cancelled \
                    and not self.kind.done(self.by_id[job_id]):
                waiting += 1  # not settled yet
                continue
            await drop_request(self.client, name)
            self.retry(request)
        return waiting

    def retry(self, request: RetryRequest) -> None:
        """Run a settled job again with a fresh budget, counted by this campaign's tally."""
        job = self.by_id.get(request.job_id)
        if job is None or not (self.tally.failures.pop(job.id, None) or self.tally.cancelled.pop(job.id, None)):
            self.logger.warning("Retry of %s requested by %s ignored: not a failed or cancelled job of this campaign",
                                request.job_id, request.requested_by)
            return
        attempt = self.last_attempt[job.id] + 1 if job.id in self.last_attempt else self.resumed.first_attempt(job.id)
        self.resumed.start_attempt[job.id] = attempt  # a fresh budget of max_attempts from here
        self.logger.warning("%s retried at the request of %s (attempt %d)", job.id, request.requested_by, attempt)
        self.kind.queued(job)
        self.dispatcher.add(job, attempt, front=True)

    # -- runs rerun from outside the campaign (flows/campaign/settled.py) -------------------
    def follow_earlier_cancels(self) -> None:
        """Jobs an earlier invocation left cancelled: their runs are followed as this one's."""
        for job_id, record in self.resumed.cancelled_runs.items():
            job = self.by_id.get(job_id)
            if job is not None:
                pool = record.pool if record.pool in self.dispatcher.in_flight else job.resource_types[0]
                ticket = Ticket(job, record.attempt, pool)
                self.last_attempt[job_id] = record.attempt
                self.settled.note(UUID(record.run_id), ticket, Outcome.CANCELLED,
                                  UUID(record.state_id) if record.state_id else None)

    async def follow_settled_runs(self) -> bool:
        """Take back in flight every settled run whose state changed since (rerun or ended
        otherwise by someone else); whether there was one. Never stops the campaign."""
        try:
            changed = await self.settled.changed(self.client, self.s.name)
        except Exception as exc:  # noqa: BLE001 - the next look tries again
            self.logger.debug("reading settled runs: %s", exc)
            return False
        for run, settled in changed:
            self.reopen(run, settled)
        return bool(changed)

    def reopen(self, run, settled) -> None:
        """Undo the run's settlement and follow it as in flight; its next end settles the job."""
        job = settled.ticket.job
        self.settled.forget(run.id)
        if not (self.tally.failures.pop(job.id, None) or self.tally.cancelled.pop(job.id, None)):
            return  # the campaign runs the job again already (a retry request): that run settles it
        self.logger.warning("%s: its run %s left %s for %s from outside the campaign (a rerun from the Prefect UI "
                            "or CLI?); following it", job.id, run.name, settled.outcome.value, run.state.name)
        self.in_flight[run.id] = settled.ticket
        if run.state.is_final():
            self.run_reads.owe()  # it ended again already: its end is read at the next tick
        else:
            self.states.known(run.id, run.state)  # older events of its earlier attempt are not news
        self.reruns.add(run.id)
        self.dispatcher.returned(settled.ticket)
        self.kind.queued(job)
