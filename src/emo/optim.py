"""How the model's weights are trained, for any optimizer and learning-rate schedule given as settings (`optimizer:`,
`lr_scheduler:`): the parameter groups (no weight decay on biases and norms; with layer-wise decay, lower layers at a
smaller learning rate), the choices emo makes for an optimizer left to it (the fused kernel), and emo's default
schedule, a linear warm-up then a linear decay to 0 (`LinearWarmupDecay`).
"""

import functools
import importlib
import inspect
import re

from jsonargparse.typing import ClosedUnitInterval
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from transformers.trainer_pt_utils import get_parameter_names

from emo import UserError

# The defaults of the `optimizer:` and `lr_scheduler:` settings: the original lab's AdamW, a linear warm-up then decay.
DEFAULT_OPTIMIZER = {
    "class_path": "torch.optim.AdamW",
    "init_args": {"lr": 2.0e-5, "weight_decay": 0.01, "eps": 1.0e-8},
}
DEFAULT_LR_SCHEDULER = {"class_path": "emo.optim.LinearWarmupDecay", "init_args": {"warmup_ratio": 0.0}}
# Parameters that get no weight decay, as in transformers' Trainer: biases and normalisation weights.
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"layer_norm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
LAYER = re.compile(r"\.layers?\.(\d+)\.")  # a transformer layer's parameters: `encoder.layer.3.` (BERT), `layers.3.`


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for transformer layer i, num_layers + 1 for what sits on top (pooler, head)."""
    if "embeddings" in name:
        return 0
    layer = LAYER.search(name)
    return int(layer.group(1)) + 1 if layer else num_layers + 1


def check_layers_known(model: nn.Module) -> None:
    """Layer-wise decay needs every transformer layer named as emo knows them (`layer.<i>.` or `layers.<i>.`); one
    line says what is not supported, rather than giving unknown layers the head's learning rate."""
    num_layers = getattr(model.config, "num_hidden_layers", None)
    found = {int(match.group(1)) for name, _ in model.named_parameters() if (match := LAYER.search(name))}
    if not num_layers or found != set(range(num_layers)):
        raise UserError(
            f"--model.layer_lr_decay: emo does not know the layers of {type(model).__name__} (parameters named "
            f"'layer.<i>.' or 'layers.<i>.' for its {num_layers} layers); set --model.layer_lr_decay 1"
        )


def parameter_groups(model: nn.Module, layer_lr_decay: float = 1.0) -> list[dict]:
    """The trainable parameters in groups: no weight decay for biases and norms (`weight_decay` 0; the others take the
    optimizer's), and with `layer_lr_decay` < 1 a learning rate per depth (`lr_scale`, a factor of the optimizer's:
    the head at 1, the layer below at `layer_lr_decay`, and so on down; `use_lr_scales` applies it)."""
    if layer_lr_decay < 1:
        check_layers_known(model)
    decayed = set(get_parameter_names(model, [nn.LayerNorm], NO_DECAY_PATTERNS))
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decays = layer_depth(name, num_layers), name in decayed
        group = groups.setdefault(
            (depth, decays),
            {"params": [], **({} if decays else {"weight_decay": 0.0})},
        )
        if layer_lr_decay < 1:
            group["lr_scale"] = layer_lr_decay ** (num_layers + 1 - depth)
        group["params"].append(parameter)
    return list(groups.values())


def as_callable(setting: dict):
    """A `{class_path, init_args}` setting as a callable of the rest of the class's arguments (as jsonargparse makes
    it of the command line's): for Python, where no parser runs."""
    module, _, name = setting["class_path"].rpartition(".")
    return functools.partial(getattr(importlib.import_module(module), name), **setting.get("init_args", {}))


def plain_callable(part):
    """`part` as a plain `functools.partial` of its class: jsonargparse's callables carry its instantiator (which holds
    a lock), so a module holding them cannot be copied (EMA weight averaging) or pickled (DDP spawn)."""
    if isinstance(part, functools.partial) and not inspect.isclass(part.func):
        classes = [arg for arg in part.args if inspect.isclass(arg)]
        if len(classes) == 1:
            return functools.partial(classes[0], **part.keywords)
    return part


def build_optimizer(optimizer, groups: list[dict], device_type: str) -> Optimizer:
    """`optimizer` (a callable from the `optimizer:` setting) over `groups`, each group's learning rate scaled by its
    `lr_scale`. An optimizer with a fused kernel left unset (`fused: null`) gets it on a CPU or a CUDA GPU: AdamW's
    step on a CPU takes a fifth of the default's (0.03 s vs 0.16 s for MiniLM)."""
    built = optimizer(groups)
    fused_known = "fused" in inspect.signature(type(built)).parameters
    if fused_known and built.defaults.get("fused") is None and device_type in ("cpu", "cuda"):
        built = optimizer(groups, fused=True)
    for group in built.param_groups:
        group["lr"] = group["lr"] * group.pop("lr_scale", 1.0)
    return built


def build_scheduler(lr_scheduler, optimizer: Optimizer, total_steps: int):
    """`lr_scheduler` (from the `lr_scheduler:` setting) of `optimizer`; a schedule that takes `total_steps` (emo's
    `LinearWarmupDecay`, torch's `OneCycleLR`) is given the fit's number of optimizer steps."""
    keywords, target = getattr(lr_scheduler, "keywords", {}), getattr(lr_scheduler, "func", lr_scheduler)
    takes_steps = "total_steps" in keywords or (  # jsonargparse's callables name every init arg
        inspect.isclass(target) and "total_steps" in inspect.signature(target).parameters
    )
    return lr_scheduler(optimizer, total_steps=total_steps) if takes_steps else lr_scheduler(optimizer)


class LinearWarmupDecay(LambdaLR):
    """The learning rate rises linearly from 0 over the first `warmup_ratio` of the steps, then falls linearly to 0 at
    the last: transformers' `get_linear_schedule_with_warmup` (tests/test_model.py holds them equal).

    Args:
        optimizer: The optimizer whose learning rates it scales.
        warmup_ratio: Share of the steps that warm up.
        total_steps: The fit's optimizer steps (emo gives it).
        last_epoch: The step to start from (-1: the beginning).
    """

    def __init__(
        self, optimizer: Optimizer, warmup_ratio: ClosedUnitInterval = 0.0, total_steps: int = 1, last_epoch: int = -1
    ):
        self.warmup_steps, self.total_steps = round(warmup_ratio * total_steps), total_steps
        super().__init__(optimizer, self.factor, last_epoch)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        return max(0.0, float(self.total_steps - step) / float(max(1, self.total_steps - self.warmup_steps)))
