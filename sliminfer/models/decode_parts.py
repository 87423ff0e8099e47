"""The pieces of a decoder layer's attention that a static-shape decode step needs.

The eager path lets the model's attention module do projections, RoPE, the cache write and the
attention call in one go. A decode step that a CUDA graph can capture must write its KV into fixed
buffers and run the attention itself, so it needs the parts around that call separately: queries,
keys and values exactly as the attention module computes them (projections with any bias, Qwen3's
per-head q/k norms, RoPE), the softmax scale, and the output projection.

``DecodeParts`` is a base of :class:`~sliminfer.models.base.ModelAdapter` (Llama layout; a model laid
out differently overrides these methods in its adapter: Phi-3's fused ``qkv_proj`` overrides
:meth:`DecodeParts.qkv_projections` only); :func:`bind_decode_parts` also binds its methods to an
adapter object that does not inherit it (a third-party adapter). A static decoder binds them with
:class:`FusedProjections`, its own concatenated copies of the q/k/v and gate/up weights (one matmul
each; layers whose projections are one linear already, Phi-3's, have nothing to copy); the model's
modules and parameters are never changed.
"""

from __future__ import annotations

import warnings
import weakref
from types import MethodType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter, PositionEmbeddings
    from sliminfer.models.prefill_ops import PrefillOps


def _fusable(linears: list[Any]) -> bool:
    """Whether ``linears`` are plain ``torch.nn.Linear`` modules whose one matmul over their concatenated
    weights computes exactly what their own forwards do: no subclass (quantized, LoRA-wrapped or
    parametrized modules override forward or hold no weight Parameter), no hooks, plain dense weights
    (not DTensor shards, quantized or meta tensors) of one dtype on one device, the same input width."""
    if any(type(lin) is not torch.nn.Linear for lin in linears):
        return False
    if _global_hooks() or any(lin._forward_hooks or lin._forward_pre_hooks for lin in linears):
        return False
    weights = [lin.weight for lin in linears]
    tensors = weights + [lin.bias for lin in linears if lin.bias is not None]
    if any(not isinstance(t, torch.nn.Parameter) or type(t.data) is not torch.Tensor for t in tensors):
        return False
    first = weights[0]
    return (first.device.type != "meta" and first.dtype.is_floating_point
            and all(t.device == first.device and t.dtype == first.dtype for t in tensors)
            and all(w.dim() == 2 and w.shape[1] == first.shape[1] for w in weights))


def _global_hooks() -> bool:
    from torch.nn.modules import module

    return bool(getattr(module, "_global_forward_hooks", None) or getattr(module, "_global_forward_pre_hooks", None))


def _version(t: torch.Tensor) -> object:
    """``t``'s in-place version counter; a fresh object (never equal: copy again) for an inference tensor
    (a model built under ``torch.inference_mode``), which keeps none."""
    if t.is_inference():
        return object()
    return t._version


class _FusedGroup:
    """One matmul's worth of linears: their weights (and biases) concatenated by output rows, as copies."""

    def __init__(self, linears: list[Any]) -> None:
        self.linears = linears
        self.sizes = tuple(int(lin.weight.shape[0]) for lin in linears)
        self.weight = torch.cat([lin.weight.detach() for lin in linears], dim=0)
        has_bias = any(lin.bias is not None for lin in linears)
        self.bias = torch.cat([self._bias(lin) for lin in linears], dim=0) if has_bias else None
        self.stamp = self._stamp()

    @staticmethod
    def _bias(lin: Any) -> torch.Tensor:
        """The linear's bias, zeros for one without (a fused matmul adds one bias vector for all)."""
        if lin.bias is not None:
            return lin.bias.detach()
        return lin.weight.new_zeros(lin.weight.shape[0])

    def _stamp(self) -> tuple[Any, ...]:
        """Where the source tensors live and their in-place versions: any change moves the stamp."""
        return tuple((t.data_ptr(), _version(t)) for lin in self.linears for t in (lin.weight, lin.bias)
                     if t is not None)

    def same_layout(self, linears: list[Any]) -> bool:
        """Whether ``linears`` (the layer's modules now) are the ones fused, still fusable, same shapes."""
        return (all(a is b for a, b in zip(linears, self.linears)) and _fusable(linears)
                and tuple(int(lin.weight.shape[0]) for lin in linears) == self.sizes
                and linears[0].weight.shape[1] == self.weight.shape[1]
                and (self.bias is not None) == any(lin.bias is not None for lin in linears))

    def refresh(self) -> None:
        """Copy the sources in again if they changed since (in place, so a captured graph stays valid)."""
        stamp = self._stamp()
        if stamp == self.stamp:
            return
        with torch.no_grad():
            for part, lin in zip(self.weight.split(self.sizes, dim=0), self.linears):
                part.copy_(lin.weight)
            if self.bias is not None:
                for part, lin in zip(self.bias.split(self.sizes, dim=0), self.linears):
                    part.copy_(self._bias(lin))
        self.stamp = stamp

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.weight, self.bias) if t is not None)


class FusedLayer(NamedTuple):
    qkv: _FusedGroup | None  # None: that layer's projections run through their own modules
    gate_up: _FusedGroup | None


def _layer_groups(block: Any) -> tuple[list[Any], list[Any]]:
    """The layer's q/k/v and gate/up linears (None for one it lacks: Phi-3's fused ``qkv_proj`` gives
    ``[None] * 3``, nothing to fuse). The fused MLP computes ``down_proj(act_fn(gate) * up)`` itself, so an
    MLP module without those parts (Phi-3's ``gate_up_proj``) or with hooks of its own (which the fused
    path would skip) gives ``[None]``: its own forward runs."""
    attn, mlp = block.self_attn, block.mlp
    qkv = [getattr(attn, name, None) for name in ("q_proj", "k_proj", "v_proj")]
    gate_up = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj")]
    if not (hasattr(mlp, "down_proj") and hasattr(mlp, "act_fn")) or mlp._forward_hooks or mlp._forward_pre_hooks:
        gate_up = [None]
    return qkv, gate_up


class FusedProjections:
    """Each layer's q/k/v and gate/up weights concatenated, as the decoder's own copies.

    A batch-1 decode step is a chain of matrix-vector products, each with a fixed launch cost (and on
    GPUs each too small to fill the device): fusing q/k/v into one and gate/up into one removes three of
    seven per layer. The model is not touched: its parameters keep their storage, and its modules
    compute everything else (the eager path, the prefill, scoring).

    Memory: one extra copy of the fused weights, i.e. of the q/k/v and gate/up projections (about 56%
    of Llama-3-8B's weights, 9.1 GB in bf16), held while a decoder using it lives. Decoders built while
    another lives share its copy (:func:`fuse_projections`), so replacing a decoder never holds two.
    ``gate_up=False`` fuses q/k/v only (about 9 % of the weights, 1.6 GB there: two of the three saved
    launches for a sixth of the memory), what a decoder that exists to save GPU memory chooses
    (``decode.fuse: qkv``); ``fuse: false`` runs the model's own modules (no copy, more launches).

    The copies follow in-place changes of the model's weights (``load_state_dict``, ``copy_``):
    :meth:`refresh`, called for every request, compares each source's address and version counter and
    copies the changed groups in again. A layer whose linears cannot be fused (quantized, LoRA-wrapped,
    hooked, sharded) runs through its modules' own forwards.
    """

    def __init__(self, adapter: Any, gate_up: bool = True) -> None:
        self.layers: list[FusedLayer] = []
        self.gate_up = gate_up
        for block in adapter.layers:
            qkv, mlp = _layer_groups(block)
            self.layers.append(FusedLayer(
                _FusedGroup(qkv) if None not in qkv and _fusable(qkv) else None,
                _FusedGroup(mlp) if gate_up and None not in mlp and _fusable(mlp) else None,
            ))
        self._adapter_layers = adapter.layers

    @property
    def any(self) -> bool:
        """Whether at least one group is fused."""
        return any(g is not None for layer in self.layers for g in layer)

    def valid_for(self, adapter: Any) -> bool:
        """Whether every fused group still matches the model's modules (none replaced or reshaped)."""
        if adapter.layers is not self._adapter_layers or len(adapter.layers) != len(self.layers):
            return False
        for block, fused in zip(adapter.layers, self.layers):
            for group, linears in zip(fused, _layer_groups(block)):
                if group is not None and (None in linears or not group.same_layout(linears)):
                    return False
        return True

    def refresh(self) -> None:
        for layer in self.layers:
            for group in layer:
                if group is not None:
                    group.refresh()

    def nbytes(self) -> int:
        return sum(g.nbytes() for layer in self.layers for g in layer if g is not None)


def fuse_projections(adapter: Any, gate_up: bool = True) -> FusedProjections | None:
    """The adapter's fused q/k/v (and with ``gate_up`` gate/up) weights (:class:`FusedProjections`), None
    where no layer's linears can be fused. While a result is alive (a decoder holds it) later calls for the
    same adapter return it, refreshed, instead of building a second copy (one that fuses gate/up too serves
    a call that asks for q/k/v only: it costs nothing more); the model itself is never changed."""
    holder = getattr(adapter, "__dict__", None)
    ref = holder.get("_fused_projections") if holder is not None else None
    fused = ref() if ref is not None else None
    if fused is not None and fused.valid_for(adapter) and (fused.gate_up or not gate_up):
        fused.refresh()
        return fused
    try:
        with torch.no_grad():
            fused = FusedProjections(adapter, gate_up)
    except torch.OutOfMemoryError:  # no room for the copy: the modules' own matmuls need none
        warnings.warn("fast decode: no device memory for the fused q/k/v and gate/up weights (one extra "
                      "copy of them); decoding with the model's own projections", stacklevel=3)
        return None
    if not fused.any:
        return None
    if holder is not None:
        holder["_fused_projections"] = weakref.ref(fused)
    return fused


def project_qkv(
    adapter: Any, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings,
    fused: _FusedGroup | None, ops: PrefillOps | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q/k/v as the attention module computes them; with ``ops``, the input norm and RoPE run compiled and the
    three come contiguous (``PrefillOps.rope_qkv``)."""
    block = adapter.layers[layer]
    attn = block.self_attn
    x = block.input_layernorm(hidden) if ops is None else ops.norm(block.input_layernorm, hidden)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    if fused is not None:
        flat = torch.nn.functional.linear(x, fused.weight, fused.bias).split(fused.sizes, dim=-1)
    else:
        flat = _own(adapter, "qkv_projections")(layer, x)
    q, k, v = (t.reshape(shape) for t in flat)
    q_norm = getattr(attn, "q_norm", None)  # Qwen3: per-head RMS norm before RoPE
    if q_norm is not None:
        q, k = q_norm(q), attn.k_norm(k)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    cos, sin = position_embeddings
    if ops is not None:
        return ops.rope_qkv(q, k, v, cos, sin)
    q, k = adapter._rope(q, k, cos, sin)
    return q, k, v


def _mlp(adapter: Any, layer: int, hidden: torch.Tensor, fused: _FusedGroup | None) -> torch.Tensor:
    block = adapter.layers[layer]
    x = block.post_attention_layernorm(hidden)
    if fused is None:
        return hidden + block.mlp(x)
    gate, up = torch.nn.functional.linear(x, fused.weight, fused.bias).split(fused.sizes, dim=-1)
    return hidden + block.mlp.down_proj(block.mlp.act_fn(gate) * up)


class DecodeParts:
    """Attention pieces of one decoder layer, for callers that run the attention kernel themselves."""

    layers: Any
    _rope: Any

    def qkv_projections(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's query, key and value projections of its normed input ``x``, heads not split
        (``[b, n, heads * d]`` each): ``q_proj``, ``k_proj``, ``v_proj`` (an adapter whose attention fuses
        them, Phi-3's ``qkv_proj``, overrides this; norms and RoPE follow in :meth:`decode_qkv`)."""
        attn = self.layers[layer].self_attn
        return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)

    def decode_qkv(
        self, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` of ``hidden``'s tokens at ``layer``: ``[b, q_heads, n, d]`` and ``[b, kv_heads, n, d]``,
        after the input norm, projections, any q/k norm and RoPE (what the attention module feeds its kernel)."""
        return project_qkv(self, layer, hidden, position_embeddings, None)

    def decode_mlp(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden + mlp(post_attention_layernorm(hidden))``."""
        return _mlp(self, layer, hidden, None)

    def attention_scale(self, layer: int) -> float:
        return float(self.layers[layer].self_attn.scaling)

    def attention_output(self, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """``hidden + o_proj(attn_out)``, ``attn_out`` being ``[b, n, q_heads * d]``."""
        return hidden + self.layers[layer].self_attn.o_proj(attn_out)


class BoundDecodeParts(NamedTuple):
    qkv: Any
    scale: Any
    output: Any
    mlp: Any


def _own(adapter: Any, name: str) -> Any:
    """The adapter's method ``name`` if it is a :class:`DecodeParts`, else the mixin's bound to it."""
    if isinstance(adapter, DecodeParts):
        return getattr(adapter, name)
    return MethodType(getattr(DecodeParts, name), adapter)


def uses_mixin(adapter: Any, name: str) -> bool:
    """Whether ``adapter`` computes the part ``name`` (``decode_qkv``, ``decode_mlp``) with this mixin's own
    method, so that its variants (fused weights, compiled prefill ops) may stand in for it; an adapter that
    overrides the method keeps its override."""
    return not isinstance(adapter, DecodeParts) or getattr(type(adapter), name) is getattr(DecodeParts, name)


def bind_decode_parts(adapter: ModelAdapter, fused: FusedProjections | None = None) -> BoundDecodeParts:
    """The adapter's own methods if it is a :class:`DecodeParts`, else the mixin's bound to it.

    With ``fused``, the q/k/v and MLP parts run the fused matmuls where the adapter uses the mixin's
    own ``decode_qkv`` / ``decode_mlp`` (:func:`uses_mixin`; an override stays, unfused)."""
    qkv, mlp = _own(adapter, "decode_qkv"), _own(adapter, "decode_mlp")
    if fused is not None:
        if uses_mixin(adapter, "decode_qkv"):
            qkv = _fused_qkv(adapter, fused.layers)
        if uses_mixin(adapter, "decode_mlp"):
            mlp = _fused_mlp(adapter, fused.layers)
    return BoundDecodeParts(qkv, _own(adapter, "attention_scale"), _own(adapter, "attention_output"), mlp)


def _fused_qkv(adapter: Any, layers: list[FusedLayer]) -> Any:
    def qkv(layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings) -> Any:
        return project_qkv(adapter, layer, hidden, position_embeddings, layers[layer].qkv)

    return qkv


def _fused_mlp(adapter: Any, layers: list[FusedLayer]) -> Any:
    def mlp(layer: int, hidden: torch.Tensor) -> torch.Tensor:
        return _mlp(adapter, layer, hidden, layers[layer].gate_up)

    return mlp
