"""The degradation lab's training loop against a bare PyTorch loop, and the default experiment's wall time.

The four default networks (plain-20, plain-56, ResNet-20, ResNet-56) train on the same digits batches
(the default size and batch) for the same steps, once through `experiment.train` (which also records every step,
validates every epoch and measures the networks) and once through a bare loop of forward, loss, backward
and SGD step. Target: the lab's throughput per network >= 0.9x the bare loop's. Then the default experiment
runs whole, and its wall time is printed (on a GPU, the GPU check measures it against 60 s).
"""

from __future__ import annotations

import dataclasses
import time

from bench import Target

EPOCHS = 2


def _bare(data, config, nets) -> float:
    """Seconds for a plain loop over the lab's batches (same order, same optimiser, same learning rate)."""
    import torch

    opts = [torch.optim.SGD(n.parameters(), lr=config.lr, momentum=config.momentum,
                            weight_decay=config.weight_decay) for n in nets]
    order = torch.Generator().manual_seed(config.seed)
    n, batch = len(data.x_train), config.batch_size
    per_epoch = n // batch
    t = time.perf_counter()
    for _ in range(config.epochs):
        perm = torch.randperm(n, generator=order)
        for i in range(per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb, yb = data.x_train[idx], data.y_train[idx]
            for net, opt in zip(nets, opts, strict=True):
                loss = torch.nn.functional.cross_entropy(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return time.perf_counter() - t


def run() -> list[Target]:
    import torch

    from zoo.degradation import data, experiment, nets

    default = experiment.Config()
    config = dataclasses.replace(default, epochs=EPOCHS)
    digits = data.digits(config.size)
    cpu = torch.device("cpu")

    def fresh():
        return [nets.build(d, r, seed=config.seed) for r in (False, True) for d in config.depths]

    experiment.train(digits, dataclasses.replace(config, epochs=1, limit=256), cpu)  # warm-up
    bare, lab, whole = [], [], []
    for _ in range(2):  # alternate, keep the best of each: the machine's noise hits both alike
        bare.append(_bare(digits, config, fresh()))
        t = time.perf_counter()
        result = experiment.train(digits, config, cpu)
        whole.append(time.perf_counter() - t)
        lab.append(result.seconds)  # the training loop with its per-step records and per-epoch validation
    steps = (len(digits.x_train) // config.batch_size) * EPOCHS
    images = steps * config.batch_size
    print(f"{steps} steps of {config.batch_size} for {2 * len(config.depths)} networks: bare loop "
          f"{min(bare):.1f} s ({images / min(bare):,.0f} img/s per network), lab {min(lab):.1f} s "
          f"({images / min(lab):,.0f} img/s per network, with per-step records and validation; "
          f"{min(whole):.1f} s with the one-off measurements at init and at the end)")
    t = time.perf_counter()
    result = experiment.train(digits, default, cpu)
    wall = time.perf_counter() - t
    print(f"default experiment ({default.epochs} epochs, {result.steps} steps, digits at {default.size} px, "
          f"depths {default.depths}): {wall:.0f} s on this machine's CPU; final training error "
          + ", ".join(f"{n.name} {100 * n.train_error:.1f}%" for n in result.networks))
    return [Target("degradation_lab_vs_bare_loop_throughput", min(bare) / min(lab), ">=", 0.9)]
