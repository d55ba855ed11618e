"""LoRA on frozen encoders with `peft` (docs/models.md §3.2, §3.3): add, inspect, merge.

SynthSleepNet keeps each channel's pretrained NeuroNet encoder frozen and adapts it with LoRA on the
attention output projections (`attn.proj`, an `nn.Linear` in every `models.transformer.Block`); downstream
fine-tuning merges those adapters into the weights and adds new ones. `peft.inject_adapter_in_model`
replaces each targeted Linear in place by a `peft` LoRA layer, so its state-dict keys become
`...attn.proj.base_layer.weight`, `...attn.proj.lora_A.default.weight` and `...attn.proj.lora_B.default.weight`.

    y = W x + b + scaling * B(A(dropout(x))),  scaling = alpha / sqrt(rank) (rsLoRA) or alpha / rank

B starts at zero, so an adapted encoder computes exactly what the frozen one did until B is trained.
`peft` is imported only when adapters are added or inspected (importing it pulls in `transformers`, seconds).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

DEFAULT_ADAPTER = "default"
LORA_PARAM_MARKER = "lora_"  # every LoRA parameter name has a `lora_A.` / `lora_B.` part


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scale and placement of the adapters; `targets` are module-name suffixes (peft matching)."""

    rank: int = 4
    alpha: float = 16.0
    dropout: float = 0.05
    rslora: bool = True
    targets: tuple[str, ...] = ("attn.proj",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("LoRA targets is empty: name at least one module suffix, e.g. 'attn.proj'")

    @property
    def scaling(self) -> float:
        """Factor on B·A: alpha / sqrt(rank) with rsLoRA (8 at rank 4, alpha 16), else alpha / rank."""
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def peft_config(self) -> LoraConfig:
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            use_rslora=self.rslora,
            target_modules=list(self.targets),
            bias="none",
        )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def freeze(module: nn.Module) -> nn.Module:
    """requires_grad = False on every parameter of `module`; returns it."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def lora_layers(module: nn.Module) -> list[tuple[str, LoraLayer]]:
    """(qualified name, layer) of every peft LoRA layer inside `module`."""
    from peft.tuners.lora import LoraLayer

    return [(name, sub) for name, sub in module.named_modules() if isinstance(sub, LoraLayer)]


def lora_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA A/B matrices inside `module`, by qualified parameter name."""
    return {name: param for name, param in module.named_parameters() if LORA_PARAM_MARKER in name}


def add_lora(module: nn.Module, settings: LoraSettings, adapter_name: str = DEFAULT_ADAPTER) -> dict[str, nn.Parameter]:
    """Freeze `module` and inject one LoRA adapter into every submodule whose name ends with a target.

    Afterwards the new adapter's A/B matrices are the only trainable parameters of `module`. Returns them by
    name. Raises ValueError naming the targets when none matched (nothing would be adapted).
    """
    from peft import inject_adapter_in_model

    freeze(module)
    try:
        inject_adapter_in_model(settings.peft_config(), module, adapter_name=adapter_name)
    except ValueError as err:
        names = [name for name, _ in module.named_modules() if name][:12]
        raise ValueError(
            f"LoRA: no module of {type(module).__name__} matches targets {list(settings.targets)} "
            f"(first modules: {names}): {err}"
        ) from err
    added = {name: param for name, param in lora_parameters(module).items() if f".{adapter_name}." in name}
    if not added:
        raise ValueError(f"LoRA: targets {list(settings.targets)} matched no nn.Linear of {type(module).__name__}")
    for name, param in module.named_parameters():
        param.requires_grad_(name in added)
    return added


def set_lora_dropout_mode(module: nn.Module, training: bool) -> None:
    """Put only the LoRA dropout layers of `module` in train (True) or eval (False) mode."""
    for _, layer in lora_layers(module):
        layer.lora_dropout.train(training)


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA adapter inside `module` into its base Linear (W += scaling · B A) and put the plain
    Linear back in its place (state-dict keys return to `...attn.proj.weight`). Returns the number merged.

    The module computes the same function before and after (up to float rounding); new adapters can then be
    added with `add_lora` (e.g. fine-tuning LoRA on top of the pretraining one, docs/models.md §3.3).
    """
    layers = lora_layers(module)
    if any(not name for name, _ in layers):
        raise ValueError("merge_lora: pass the module that contains the LoRA layer, not the layer itself")
    for name, layer in layers:
        layer.merge(adapter_names=list(layer.lora_A.keys()))
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module  # the layer's owner
        setattr(parent, child, layer.get_base_layer())
    return len(layers)
