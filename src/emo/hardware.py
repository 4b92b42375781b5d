"""What the machine runs fast: the precision a fit uses when the config leaves it to emo, and CPU kernels.

bf16 autocast roughly doubles training speed where the hardware has bf16 matrix units (a GPU
from Ampere on, a CPU with AVX512-BF16 or AMX) and slows it down elsewhere, so it is chosen per
machine. `--trainer.precision 32-true` or `bf16-mixed` forces either.

On a CPU, a fit also draws its dropout masks faster (`cpu_dropout`) and uses plain attention
(`cpu_attention`): the same computation, a shorter step.
"""

import contextlib
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from emo.quiet import logger_at

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_fast_bf16() -> bool:
    """The CPU has bf16 matrix instructions, as its kernel lists them (Linux; elsewhere: no)."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def uses_cuda(accelerator) -> bool:
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    return ("cuda" in name or "gpu" in name or name == "auto") and torch.cuda.is_available()


def fast_precision(accelerator="auto") -> str:
    """`bf16-mixed` where bf16 is fast on the device the trainer will use, else `32-true`."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__.lower()
    if name == "auto" and torch.backends.mps.is_available():
        return "32-true"  # Apple GPUs: full precision is the safe choice
    if "cpu" in name or name == "auto":
        return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    return "32-true"


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout (training mode) with its mask drawn about twice as fast on a CPU as torch's.

    torch draws a CPU dropout mask one 32-bit random number per element; at MiniLM's sizes that
    is a sixth of a training step. Here each 64-bit draw gives three 16-bit ones (the drop
    probability is `p` rounded to 1/65536), from torch's own generator, so seeds work as before.
    """
    if p == 0:
        return x
    n = x.numel()
    draws = torch.empty((n + 2) // 3, dtype=torch.int64, device=x.device).random_()  # 63 random bits each
    lanes = draws.view(torch.int16).view(-1, 4)[:, :3]  # the low 48 bits as three uniform 16-bit numbers
    keep = (lanes >= round(p * 65536) - 32768).flatten()[:n].view_as(x)
    return x * (keep.to(x.dtype) * (1 / (1 - p)))


class CpuDropout(nn.Dropout):
    """`nn.Dropout` through `cpu_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_dropout(x, self.p) if self.training else x


def cpu_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention, with the attention probabilities' dropout through `cpu_dropout`.

    PyTorch's fused CPU attention is slower than this plain one at these short lengths, and with
    dropout it falls back to the plain one anyway, drawing its mask the slow way.
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key.shape[-2]]
    weights = weights.softmax(dim=-1)
    if module.training:
        weights = cpu_dropout(weights, dropout)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register("emo_cpu", cpu_attention)
AttentionMaskInterface.register("emo_cpu", ALL_MASK_ATTENTION_FUNCTIONS["eager"])  # an additive mask, as eager's


def use_cpu_kernels(model: nn.Module, attention: bool) -> None:
    """Swaps the model's `nn.Dropout` layers for `CpuDropout` (same p) and, if `attention`, its attention for `cpu_attention`."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, CpuDropout(child.p).train(child.training))
    if attention and getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager"):
        # A model that takes no attention function (MPNet) keeps its own; transformers' warning that it does is expected.
        with logger_at("transformers", logging.ERROR), contextlib.suppress(ValueError, AttributeError):
            model.set_attn_implementation("emo_cpu")
