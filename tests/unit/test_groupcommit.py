"""The group committer's queue, without a database.

GroupCommitter takes the function that applies one batch; here it is a
recorder the test controls (release a batch, fail it), so the queue's own
rules are what is tested: the in-flight cap, the batch limit, a failing
batch, and a waiter that goes away.
"""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from durable_streams.exceptions import Conflict
from durable_streams.storage import AppendRequest, AppendResult
from durable_streams.storage.groupcommit import GroupCommitter


class Batches:
    """Applies batches when the test lets them through, recording each."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.gate = asyncio.Event()
        self.fail_next: BaseException | None = None

    async def __call__(self, requests: list[AppendRequest]) -> list:
        self.seen.append([r.path for r in requests])
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            if self.fail_next is not None:
                exc, self.fail_next = self.fail_next, None
                raise exc
            return [
                Conflict("refused") if r.path.startswith("bad") else AppendResult(i, False)
                for i, r in enumerate(requests)
            ]
        finally:
            self.running -= 1


def settings(inflight: int = 1, max_batch: int = 256):
    return override_settings(
        DURABLE_STREAMS={"GROUP_COMMIT_INFLIGHT": inflight, "GROUP_COMMIT_MAX_BATCH": max_batch}
    )


async def submit(committer: GroupCommitter, *paths: str) -> list[asyncio.Task]:
    tasks = [asyncio.create_task(committer.append(AppendRequest(p))) for p in paths]
    await asyncio.sleep(0)  # let every request queue
    return tasks


async def test_requests_arriving_while_a_batch_runs_share_the_next_one():
    batches = Batches()
    committer = GroupCommitter(batches)
    with settings(inflight=1):
        first = await submit(committer, "a")
        rest = await submit(committer, "b", "c", "d")
        batches.gate.set()
        results = await asyncio.gather(*first, *rest)
    assert batches.seen == [["a"], ["b", "c", "d"]]
    assert batches.most_running == 1
    assert [r.next_position for r in results] == [0, 0, 1, 2]


async def test_the_in_flight_cap_bounds_concurrent_batches():
    batches = Batches()
    committer = GroupCommitter(batches)
    with settings(inflight=2):
        tasks = []
        for path in "abcde":
            tasks += await submit(committer, path)
        assert batches.running == 2
        batches.gate.set()
        await asyncio.gather(*tasks)
    assert batches.most_running == 2
    assert sorted(p for batch in batches.seen for p in batch) == list("abcde")
    assert len(batches.seen) < 5  # the later requests were coalesced


async def test_a_batch_takes_at_most_the_batch_limit():
    batches = Batches()
    committer = GroupCommitter(batches)
    with settings(inflight=1, max_batch=2):
        tasks = await submit(committer, "a")
        tasks += await submit(committer, "b", "c", "d", "e")
        batches.gate.set()
        await asyncio.gather(*tasks)
    assert batches.seen == [["a"], ["b", "c"], ["d", "e"]]


async def test_each_request_gets_its_own_protocol_error():
    batches = Batches()
    batches.gate.set()
    committer = GroupCommitter(batches)
    with settings():
        ok, bad = await submit(committer, "ok", "bad")
        assert (await ok).next_position == 0
        with pytest.raises(Conflict):
            await bad


async def test_a_failing_batch_fails_its_requests_and_the_queue_goes_on():
    batches = Batches()
    committer = GroupCommitter(batches)
    with settings(inflight=1):
        first = await submit(committer, "a", "b")
        queued = await submit(committer, "c")
        batches.fail_next = RuntimeError("database gone")
        batches.gate.set()
        for task in first:
            with pytest.raises(RuntimeError, match="database gone"):
                await task
        # What queued behind the failing batch is applied by the next one...
        assert (await asyncio.wait_for(queued[0], 5)).next_position == 0
        # ...and nothing is left in flight: a later request starts a batch of its own.
        assert (await committer.append(AppendRequest("d"))).next_position == 0
    assert batches.seen == [["a", "b"], ["c"], ["d"]]


async def test_a_waiter_that_goes_away_does_not_disturb_its_batch():
    batches = Batches()
    committer = GroupCommitter(batches)
    with settings(inflight=1):
        first = await submit(committer, "a")
        leaving, staying = await submit(committer, "b", "c")
        leaving.cancel()
        await asyncio.sleep(0)
        assert leaving.cancelled()
        batches.gate.set()
        await first[0]
        assert (await staying).next_position == 1
    # The request was already queued: it is applied (as a disconnected HTTP
    # client's append is) and the others of its batch keep their results.
    assert batches.seen == [["a"], ["b", "c"]]
