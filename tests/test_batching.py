"""Leader/follower batching: concurrent requests share forward passes, sized by the demand under load."""

from __future__ import annotations

import threading
import time

import torch

from zoo import batching


class Runner:
    """Logits: each image's first pixel, 10 times over; records the size of every batch it ran."""

    name = "fake"

    def __init__(self, seconds: float):
        self.seconds, self.sizes = seconds, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        time.sleep(self.seconds)
        return x[:, 0, 0, 0:1].expand(-1, 10).clone()


def image(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, 3, 2, 2), value)


def test_closed_loop_clients_settle_into_two_equal_batches_and_each_gets_its_own_rows():
    """8 clients that ask again as soon as they are answered (after 20 ms of travel): batches of 4 and 4,
    where taking everything queued drifts into uneven pairs (7 and 1, 5 and 3)."""
    runner = Runner(0.1)
    slot = batching.Slot("t", "cpu", runner, max_batch=16, wait_s=0)
    wrong, stop = [], time.monotonic() + 4

    def client(i: int) -> None:
        time.sleep(0.013 * i)  # they start at different moments, as browsers do
        while time.monotonic() < stop:
            value = float(i * 1000 + len(runner.sizes))
            logits, *_ = slot.submit(image(value)).result()
            if logits[0, 0].item() != value:
                wrong.append((value, logits[0, 0].item()))
            time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not wrong and not slot.busy
    settled = runner.sizes[len(runner.sizes) // 3:]
    assert max(settled) <= 4 and sum(settled) / len(settled) >= 3, runner.sizes


def test_a_burst_is_batched_by_the_demand_seen_and_one_request_is_never_split():
    runner = Runner(0.3)
    slot = batching.Slot("t", "cpu", runner, max_batch=16, wait_s=0)
    first = threading.Thread(target=lambda: slot.submit(image(0.0)).result())
    first.start()
    time.sleep(0.1)
    burst = [threading.Thread(target=lambda v=v: slot.submit(image(v)).result()) for v in range(1, 7)]
    for t in burst:
        t.start()
    for t in [first, *burst]:
        t.join(10)
    assert runner.sizes == [1, 4, 2]  # a demand of 7 (1 ran, 6 queued): half of it, rounded up, then the rest
    logits, _, n, _ = slot.submit(image(9.0, 12)).result()  # one request of 12 images, beyond that half
    assert n == 12 and logits.shape == (12, 10) and runner.sizes[-1] == 12
