"""Group commit under a steady load: clients that were just answered send their next request a
moment later. The queue must wait that moment rather than write the first newcomer alone and the
rest after it (a batch of one costs as much as one of sixty), and must not wait when idle."""

from __future__ import annotations

import asyncio
from typing import Any
from zoneinfo import ZoneInfo

from aftersales.tickets import intake_queue
from aftersales.tickets.intake_queue import IntakeAnswer, IntakeQueue

# The window, widened from the service's 5 ms so that a loaded CI machine's scheduling delays (a
# few ms) cannot split the rounds; the proportions of the scenario are what is tested.
GATHER_SECONDS = 0.05


def _queue(sizes: list[int], write_seconds: float) -> IntakeQueue:
    queue = IntakeQueue(open_session=None, clock=None, zone=ZoneInfo("UTC"))  # type: ignore[arg-type]

    async def answer_all(calls: list[Any]) -> list[IntakeAnswer]:
        sizes.append(len(calls))
        await asyncio.sleep(write_seconds)  # the batch being written
        return [IntakeAnswer(201, str(call).encode(), False) for call in calls]

    queue._answer_all = answer_all  # type: ignore[method-assign]
    return queue


async def test_clients_answered_together_come_back_as_one_batch_not_a_lone_first(monkeypatch: Any) -> None:
    monkeypatch.setattr(intake_queue, "GATHER_SECONDS", GATHER_SECONDS)
    sizes: list[int] = []
    queue = _queue(sizes, write_seconds=GATHER_SECONDS * 2)

    async def client(n: int) -> None:
        for round_ in range(4):
            answer = await queue.submit(f"{n}-{round_}")  # type: ignore[arg-type]
            assert answer.body == f"{n}-{round_}".encode()
            # The round trip to the client and back: the first client is much quicker than the rest.
            await asyncio.sleep(0 if n == 0 else GATHER_SECONDS * 0.4)

    await asyncio.gather(*(client(n) for n in range(20)))
    assert sum(sizes) == 80
    assert sizes[0] == 20
    # Without waiting for them, each round split into the first newcomer alone and the others:
    # [20, 1, 19, 1, 19, 1, 19]. Waiting, a batch is written once half of the last one is back.
    assert min(sizes) >= 10, sizes


async def test_a_lone_request_on_an_idle_queue_is_written_at_once(monkeypatch: Any) -> None:
    monkeypatch.setattr(intake_queue, "GATHER_SECONDS", GATHER_SECONDS)
    sizes: list[int] = []
    queue = _queue(sizes, write_seconds=0)
    for n in range(3):
        await queue.submit(str(n))  # type: ignore[arg-type]
        await asyncio.sleep(GATHER_SECONDS * 2)
    assert sizes == [1, 1, 1]


async def test_the_summary_counts_requests_batches_and_lone_requests(monkeypatch: Any) -> None:
    monkeypatch.setattr(intake_queue, "GATHER_SECONDS", GATHER_SECONDS)
    sizes: list[int] = []
    queue = _queue(sizes, write_seconds=0.01)
    await asyncio.gather(*(queue.submit(str(n)) for n in range(5)))  # type: ignore[arg-type]
    await asyncio.sleep(GATHER_SECONDS * 2)
    await queue.submit("alone")  # type: ignore[arg-type]
    assert sizes == [5, 1]
    assert queue.summary() == "intake: 6 requests in 2 batches (mean 3.0, largest 5, 1 alone)"
