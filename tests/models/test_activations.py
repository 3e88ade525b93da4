"""GELU's tanh approximation through XNNPACK: ours lowers exactly, aten.gelu(approximate="tanh") does not."""

import torch
import torch.nn.functional as F

from edgeformer.models.activations import ACTIVATIONS
from edgeformer.program import Program
from edgeformer.recipe import Recipe
from edgeformer.targets.xnnpack import lower


class Act(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _pte_output(fn, x):
    lowered = lower(torch.export.export(Act(fn), (x,)), Recipe(quant="fp32"))
    assert lowered.delegation.delegated_subgraphs == 1 and not lowered.delegation.non_delegated_ops
    return Program.of(lowered, 2)(x)


def test_tanh_gelu_lowers_to_the_tanh_approximation():
    x = torch.linspace(-6, 6, 4096).view(1, -1)
    want = F.gelu(x, approximate="tanh")
    assert (ACTIVATIONS["gelu_pytorch_tanh"](x) - want).abs().max() < 1e-6
    assert (_pte_output(ACTIVATIONS["gelu_pytorch_tanh"], x) - want).abs().max() < 1e-5
    # the reason for writing it out (ExecuTorch 1.5.1): the aten op is lowered as the erf GELU
    aten = _pte_output(lambda t: F.gelu(t, approximate="tanh"), x)
    assert (aten - F.gelu(x)).abs().max() < 1e-5 < (aten - want).abs().max()
