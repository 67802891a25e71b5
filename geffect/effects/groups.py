"""Layer groups: which module of a Hugging Face decoder belongs to which part of the network.

The engine attributes every trainable parameter *use* to the module that uses it. A *site* is
a module that directly owns trainable parameters (``named_parameters(recurse=False)``); its
contribution goes to one layer group:

- ``embed``: modules registered before the main list of transformer blocks (token embeddings,
  learned position embeddings such as GPT-2's ``wpe``) and the model's input embeddings;
- ``block.{i}``: everything inside element ``i`` of the main block list (the ``nn.ModuleList``
  holding most parameters: ``model.layers``, ``transformer.h``, ``gpt_neox.layers``, ...);
- ``final_norm``: modules registered after the block list (the final layer norm);
- ``lm_head``: the output embedding (``get_output_embeddings()``) and anything inside it.

Everything is found from the module tree, so peft wrappers (``base_model.model...``) work
unchanged. Tied weights (GPT-2's ``wte`` = ``lm_head``) belong to two sites; each use counts in
the group of the module that uses it. With ``granularity="module"`` a site is named after its
path inside its group, e.g. ``block.3.mlp.down_proj`` or ``block.0.self_attn.q_proj.lora_A``
(keys of ``nn.ModuleDict`` containers, like peft's adapter name ``default``, are dropped).

Mixture-of-experts layers that fuse their experts into stacked parameters (one slice per expert
along dim 0, as Hugging Face's ``*Experts`` modules do) are one site with one *part* per expert:
at module granularity each expert is its own column, ``block.1.mlp.experts.5``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch
from torch import nn

from geffect.schema import GROUP_EMBED, GROUP_FINAL_NORM, GROUP_HEAD, block_group, layer_sort_key

GRANULARITIES = ("layer", "module")


@dataclass(eq=False)
class Site:
    """A module that directly owns trainable parameters, and where its effect is reported."""

    index: int
    path: str  # qualified name in model.named_modules()
    module: nn.Module
    group: str  # layer group, e.g. "block.3"
    module_name: str  # fine-grained name, e.g. "block.3.mlp.down_proj"
    params: dict[str, str] = field(default_factory=dict)  # local name -> name in named_parameters()
    order: int = 0  # registration order, for sorting modules inside a group
    parts: list[str] = field(default_factory=list)  # experts stacked along dim 0 of every parameter
    composite: bool = False  # measured with every parameter of its subtree (``params`` keys are dotted)

    def column(self, granularity: str) -> str:
        """The result column this site contributes to at ``granularity`` (its first, if it has parts)."""
        return self.columns(granularity)[0]

    def columns(self, granularity: str) -> list[str]:
        """One column per part at module granularity (per expert), else the site's single column."""
        if granularity == "module" and self.parts:
            return [f"{self.module_name}.{part}" for part in self.parts]
        return [self.group if granularity == "layer" else self.module_name]

    def part_slices(self, granularity: str) -> list[int | None]:
        """Per column: the dim-0 index of the parameters it covers (``None``: all of them)."""
        return list(range(len(self.parts))) if granularity == "module" and self.parts else [None]


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The main list of transformer blocks: the non-empty ``nn.ModuleList`` with most parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, path, module)
    if best is None or best[0] == 0:
        raise ValueError(
            f"could not find the list of transformer blocks (an nn.ModuleList) in {type(model).__name__}; "
            "geffect's layer groups need a decoder with a ModuleList of blocks"
        )
    return best[1], best[2]


def _module_path(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    for path, module in model.named_modules():
        if module is target:
            return path
    return None


def _call_optional(model: nn.Module, method: str) -> nn.Module | None:
    getter = getattr(model, method, None)
    if getter is None:
        return None
    try:
        result = getter()
    except (NotImplementedError, AttributeError):
        return None
    return result if isinstance(result, nn.Module) else None


def _clean(path: str, prefix: str, modules: dict[str, nn.Module]) -> str:
    """``path`` relative to ``prefix`` with ``nn.ModuleDict`` keys (peft adapter names) dropped."""
    parts = path.split(".") if path else []
    start = len(prefix.split(".")) if prefix else 0
    kept = []
    for i in range(start, len(parts)):
        parent = ".".join(parts[:i])
        if isinstance(modules.get(parent), nn.ModuleDict):
            continue
        kept.append(parts[i])
    return ".".join(kept)


def _join(*names: str) -> str:
    return ".".join(n for n in names if n)


def _inside(path: str, prefix: str | None) -> bool:
    return prefix is not None and (path == prefix or path.startswith(prefix + "."))


def expert_count(module: nn.Module) -> int:
    """Experts fused into ``module``'s own parameters (0 if it is not a fused-experts container).

    A container has an integer ``num_experts`` of at least 2, every trainable parameter it owns
    stacks one slice per expert along dim 0, and its weights are stacked matrices (e.g.
    ``gate_up_proj`` of shape (E, 2I, H); a router's (E, H) weight is one matrix, not a stack).
    """
    count = getattr(module, "num_experts", None)
    own = [p for p in module.parameters(recurse=False) if p.requires_grad]
    if isinstance(count, int) and not isinstance(count, bool) and count > 1 and own \
            and all(p.dim() >= 2 and p.shape[0] == count for p in own) and any(p.dim() >= 3 for p in own):
        return count
    return 0


def find_sites(model: nn.Module, composites: Collection[str] = ()) -> list[Site]:
    """Every module directly owning trainable parameters, with its layer group and module name.

    ``composites``: paths of modules measured as one site with all trainable parameters of their
    subtree (a module whose parameters a parent uses functionally is merged into that parent; see
    ``EffectProbe``); modules inside a composite are not sites of their own.
    """
    modules = dict(model.named_modules())
    names_by_id = {id(p): name for name, p in model.named_parameters()}
    blocks_path, _ = find_block_list(model)
    blocks_parent = blocks_path.rpartition(".")[0]
    order = {path: i for i, path in enumerate(modules)}
    head_path = _module_path(model, _call_optional(model, "get_output_embeddings"))
    embed_path = _module_path(model, _call_optional(model, "get_input_embeddings"))

    sites: list[Site] = []
    for path, module in modules.items():
        if any(_inside(path, c) and path != c for c in composites):
            continue
        whole = path in composites
        owned = {local: names_by_id[id(p)] for local, p in module.named_parameters(recurse=whole)
                 if p.requires_grad}
        if not owned:
            continue
        if _inside(path, blocks_path) and path != blocks_path:
            index, _, _ = path[len(blocks_path) + 1:].partition(".")
            group = block_group(int(index))
            name = _join(group, _clean(path, _join(blocks_path, index), modules))
        elif _inside(path, head_path):
            group = GROUP_HEAD
            name = _join(group, _clean(path, head_path, modules))
        else:
            before = order[path] < order[blocks_path]
            group = GROUP_EMBED if (before or _inside(path, embed_path)) else GROUP_FINAL_NORM
            name = _join(group, _clean(path, blocks_parent, modules))
        parts = [] if whole else [str(e) for e in range(expert_count(module))]
        sites.append(Site(index=len(sites), path=path, module=module, group=group, module_name=name,
                          params=owned, order=order[path], parts=parts, composite=whole))
    if not sites:
        raise ValueError(f"{type(model).__name__} has no trainable parameter (all requires_grad=False)")
    return sites


def merge_into_parents(model: nn.Module, sites: list[Site], composites: Collection[str]) -> set[str]:
    """``composites`` plus the parent module of each of ``sites`` (nested composites folded into the
    outer one); raises ValueError when a parent would be the block list or lie outside the blocks."""
    blocks_path, _ = find_block_list(model)
    merged = set(composites)
    for site in sites:
        parent = site.path.rpartition(".")[0]
        if not _inside(parent, blocks_path) or parent == blocks_path:
            raise ValueError(site.path)
        merged.add(parent)
    return {c for c in merged if not any(_inside(c, other) and c != other for other in merged)}


def ordered_columns(sites: list[Site], granularity: str) -> list[str]:
    """Result columns from the embeddings to the head (modules in registration order in a group)."""
    check_granularity(granularity)
    first: dict[str, tuple] = {}
    for site in sites:
        for rank, column in enumerate(site.columns(granularity)):
            key = (layer_sort_key(site.group), site.order, rank)
            if column not in first or key < first[column]:
                first[column] = key
    return sorted(first, key=first.__getitem__)


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")


def layer_groups(model: nn.Module, granularity: str = "layer") -> dict[str, list[str]]:
    """Map each layer group (or module name) to the modules owning trainable parameters in it.

    Keys are ordered from the embeddings to the head; values are qualified module names as in
    ``model.named_modules()``. A tied weight appears under every module that uses it.
    """
    sites = find_sites(model)
    groups: dict[str, list[str]] = {column: [] for column in ordered_columns(sites, granularity)}
    for site in sites:
        for column in site.columns(granularity):
            groups[column].append(site.path)
    return groups


def trainable_parameters(model: nn.Module) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by their name in ``model.named_parameters()`` (tied ones listed once)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}
