"""BatchNorm folding for inference: a conv followed by an eval-mode BatchNorm is one conv with new weights.

Used by the fast path (`ladeda.models.fastpath`); each function returns new modules and leaves its
inputs untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_stem(conv1: nn.Conv2d, conv2: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv equal to bn(conv2(conv1(x))) in eval mode, for a 1x1 `conv1` directly followed by `conv2`.

    W[o, c, u, v] = sum_m W2[o, m, u, v] * W1[m, c] (computed in float64), and conv1's bias, if any,
    passes through conv2 as a constant; then BatchNorm is folded with fuse_conv_bn_eval.
    """
    if conv1.kernel_size != (1, 1) or conv1.stride != (1, 1) or conv1.padding not in ((0, 0), "valid"):
        raise ValueError("fold_stem needs a 1x1, stride-1, unpadded first conv")
    if conv2.padding not in ((0, 0), "valid") or conv1.groups != 1 or conv2.groups != 1:
        raise ValueError("fold_stem needs an unpadded, ungrouped second conv")
    w1 = conv1.weight.detach().double()[:, :, 0, 0]  # (M, C)
    w2 = conv2.weight.detach().double()  # (O, M, kh, kw)
    bias = torch.zeros(w2.shape[0], dtype=torch.float64, device=w2.device)
    if conv2.bias is not None:
        bias = bias + conv2.bias.detach().double()
    if conv1.bias is not None:
        bias = bias + torch.einsum("omuv,m->o", w2, conv1.bias.detach().double())
    stem = nn.Conv2d(w1.shape[1], w2.shape[0], conv2.kernel_size, stride=conv2.stride, bias=True,
                     dilation=conv2.dilation).to(device=w2.device, dtype=conv2.weight.dtype)
    stem.weight.data.copy_(torch.einsum("omuv,mc->ocuv", w2, w1))
    stem.bias.data.copy_(bias)
    return fuse_conv_bn_eval(stem.eval(), bn.eval())


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """A copy of `module` with each BatchNorm2d folded into the conv before it and replaced by Identity.

    Pairs are `convK`/`bnK` attributes of one module (the residual blocks) and consecutive
    (Conv2d, BatchNorm2d) entries of a Sequential (the downsample branches).
    """
    module = copy.deepcopy(module).eval()
    _fold_in_place(module)
    left = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold BatchNorm {', '.join(left)}: no conv directly before it")
    return module


def _fold_in_place(module: nn.Module) -> None:
    if isinstance(module, nn.Sequential):
        children = list(module)
        for k in range(len(children) - 1):
            if isinstance(children[k], nn.Conv2d) and isinstance(children[k + 1], nn.BatchNorm2d):
                module[k] = fuse_conv_bn_eval(children[k], children[k + 1])
                module[k + 1] = nn.Identity()
    for name, child in list(module.named_children()):
        conv = getattr(module, "conv" + name[2:], None) if name.startswith("bn") else None
        if isinstance(child, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
            setattr(module, "conv" + name[2:], fuse_conv_bn_eval(conv, child))
            setattr(module, name, nn.Identity())
        else:
            _fold_in_place(child)


def linear_as_conv(fc: nn.Linear) -> nn.Conv2d:
    """The per-location linear head as an equivalent 1x1 conv (no permutes around it)."""
    conv = nn.Conv2d(fc.in_features, fc.out_features, 1, bias=fc.bias is not None).to(fc.weight)
    conv.weight.data.copy_(fc.weight.detach().view(fc.out_features, fc.in_features, 1, 1))
    if fc.bias is not None:
        conv.bias.data.copy_(fc.bias.detach())
    return conv
