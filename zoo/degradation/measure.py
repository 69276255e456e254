"""What the lab measures inside the networks, as the paper does.

- Responses (Figure 7): the standard deviation of every 3x3 layer's output after BatchNorm, before the
  addition and the ReLU, on held-out images with the trained network in eval mode. Residual layers respond
  less: they only fine-tune an identity.
- Gradient norms: the L2 norm of the loss gradient reaching each 3x3 layer's weights on one fixed batch,
  in training mode (batch statistics, as training sees them), at initialisation and after training. The
  running statistics are restored afterwards, so measuring changes nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.degradation.nets import CifarNet


@torch.no_grad()
def response_std(net: CifarNet, x: torch.Tensor) -> list[float]:
    """Std of each 3x3 layer's BN output, input to output, in eval mode."""
    stds: list[torch.Tensor] = []
    hooks = [bn.register_forward_hook(lambda _m, _i, out: stds.append(out.float().std())) for bn in net.responses()]
    was_training = net.training
    try:
        net.eval()
        net(x)
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    return [round(float(s), 5) for s in stds]


def gradient_norms(net: CifarNet, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """L2 norm of d(loss)/d(weight) of each 3x3 conv, input to output, in training mode; nothing is updated."""
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    was_training = net.training
    try:
        net.train()
        loss = nn.functional.cross_entropy(net(x).float(), y)
        grads = torch.autograd.grad(loss, [c.weight for c in net.convs()])
    finally:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(buffers[k])
        net.train(was_training)
    return [round(float(g.float().norm()), 6) for g in grads]
