"""The static decoder: greedy decode with fixed shapes, one captured step replayed as a CUDA graph per token.

The eager decode (:meth:`StagedForward.decode_step`) runs the model's attention modules token by
token: Python, cache bookkeeping and several hundred small kernel launches cost far more than reading
the weights once. Here every tensor a decode step touches has a fixed shape and address, so the step
can be captured once and replayed:

- each layer has one K and one V buffer of capacity ``its prompt tokens + new tokens`` (rounded up
  to :data:`~sliminfer.decode.kernels.CAPACITY_ALIGN`); a step writes its slot with ``index_copy_`` at
  an index held in a device tensor;
- attention runs over the whole buffer, with an additive mask per layer (0 for written slots, -inf
  for the rest) that the step opens one slot at a time: layers hold different numbers of prompt
  tokens, so each layer has its own mask (the kernels: :mod:`sliminfer.decode.kernels`);
- the input token, the position and the step counter are device tensors, so the embedding and
  RoPE's (cos, sin) are computed inside the step, and the step writes its greedy token where the
  next step reads it: n tokens cost n replays and one host sync.

On the CPU the same static step runs eagerly, which is what CI checks against the eager decode.
Norms, RoPE and the output projections are the model's own modules (through the adapter); q/k/v and
gate/up run as one matmul each from the decoder's own concatenated copies of those weights
(:class:`~sliminfer.models.decode_parts.FusedProjections`: one extra copy of them while a decoder lives;
``decode.fuse: false`` runs the model's modules instead). The model itself is never changed.

The decoder takes the prompt KV from any cache manager through ``layer_keys``/``layer_values``; a
manager that accepts :meth:`KVCacheManager.offer_static_buffers` writes it straight into the
decoder's buffers during the prefill, and then nothing is copied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sliminfer.core.config import DecodeSection
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.decode import kernels
from sliminfer.decode.compile_cache import compile_static
from sliminfer.decode.kernels import CAPACITY_ALIGN, MASKED_KERNELS, flash_attend
from sliminfer.decode.streaming import HostTokens
from sliminfer.models.decode_parts import bind_decode_parts, fuse_projections

if TYPE_CHECKING:
    from sliminfer.cache.base import KVCacheManager
    from sliminfer.core.results import PrefillResult
    from sliminfer.decode.streaming import TokenSink
    from sliminfer.models.base import ModelAdapter

log = logging.getLogger(__name__)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def resolve_static_options(options: DecodeSection, device: torch.device, dtype: torch.dtype) -> tuple[bool, bool, str]:
    """``(compile, graph, kernel)`` of a static decode on ``device`` in ``dtype``: the config's choices with nulls
    resolved (compiled and graph-replayed on CUDA: measured fastest on an H100, benchmarks/results), refused with
    the field named where this device cannot run them. Shared by the decoder and the preflight, which runs it
    from the config alone, before any weight loads."""
    cuda = device.type == "cuda"
    compile = cuda if options.compile is None else options.compile
    kernel = kernels.resolve_kernel(options.kernel, compile, device, dtype)
    graph = cuda if options.graph is None else options.graph
    if graph and not cuda:
        raise ConfigError("decode.graph", True, f"CUDA graphs need a CUDA device (this decode runs on {device})")
    if options.autotune and not compile:
        raise ConfigError("decode.autotune", True, "it tunes the compiled step: set decode.compile to true "
                          "(or leave it null on CUDA), or decode.autotune to false")
    return compile, graph, kernel


class StaticDecoder:
    """Fixed buffers and one captured decode step for prompts whose per-layer KV fits its capacities.

    Build it with :meth:`for_prefill`, then per request: :meth:`prefill_cache` (optional: a prefill
    into it writes the prompt KV straight into the static buffers), :meth:`load`, :meth:`decode`,
    :meth:`tokens`. A decoder serves any later prompt whose layers fit (:meth:`fits`), reusing its
    graph: capture once, replay for every request.

    ``options`` is the ``decode:`` section (kernel, graph, compile, autotune, fuse). With ``fuse: true`` (this
    decoder's default, :attr:`default_fuse`) each layer's q/k/v and gate/up run as one matmul each, from copies of those weights that the decoder
    holds (:attr:`fused`; decoders of one adapter alive at once share them). The cost is one extra copy
    of the attention q/k/v and MLP gate/up weights on the device (about 56% of a Llama-3-8B's weights)
    for as long as the decoder lives; ``fuse: qkv`` copies q/k/v only (about 9%); ``fuse: false`` keeps no copy and calls the model's modules (three
    more launches per layer and step). Layers whose linears are not plain ``torch.nn.Linear``
    (quantized, LoRA-wrapped, hooked) always run through their own modules.
    """

    #: a later request whose prompt fits may reuse this decoder, its buffers and graph
    reusable: ClassVar[bool] = True
    #: what ``decode.fuse: null`` means for this decoder: q/k/v and gate/up (True), q/k/v only ("qkv")
    default_fuse: ClassVar[bool | str] = True

    def __init__(
        self,
        adapter: ModelAdapter,
        capacities: Sequence[int],
        max_new_tokens: int,
        *,
        dtype: torch.dtype,
        device: torch.device,
        options: DecodeSection | None = None,
    ) -> None:
        options = options or DecodeSection(mode="static")
        if len(capacities) != adapter.num_layers:
            raise InputError(f"capacities: {len(capacities)} values for {adapter.num_layers} layers")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens: {max_new_tokens}; must be at least 1")
        self.adapter = adapter
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.capacities = [_round_up(max(int(c), 1), CAPACITY_ALIGN) for c in capacities]
        compile, self.use_graph, self.attention = resolve_static_options(options, self.device, dtype)
        if getattr(adapter, "layer_devices", None) is not None:
            raise InputError("static decode: the model's layers are spread over several devices (device_map) and "
                             "the static decoder keeps one device's buffers; decode with decode.mode eager (fast=False)")
        self._check_tensor_parallel(adapter, self.use_graph, compile)
        self.compiled = compile
        self.autotune = options.autotune  # opt-in: its cost and gain are in DecodeSection.autotune's description
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None
        self.capture_s = 0.0
        self._steps_done: int | None = None  # decode steps since the last load (None: nothing loaded)
        # q/k/v and gate/up as one matmul each, from this decoder's own copies of those weights (shared
        # with any other live decoder of the adapter); the model is not changed. See FusedProjections.
        fuse = self.default_fuse if options.fuse is None else options.fuse
        self.fused = fuse_projections(adapter, gate_up=fuse is True) if fuse else None
        self._parts = bind_decode_parts(adapter, self.fused)
        self._scales = [self._parts.scale(i) for i in range(adapter.num_layers)]
        self._q_heads = adapter.num_q_heads
        self._flash = kernels.flash_op() if self.attention == "flash" else None
        with torch.inference_mode():
            self._allocate()
        self._step_fn = self._compiled_step() if compile else self._step
        log.info("new %s on %s: %d layers, capacities %d-%d tokens, %d new tokens; kernel %s, CUDA graph %s, "
                 "compiled %s (autotuned %s), fused projections %s", type(self).__name__, self.device,
                 adapter.num_layers, min(self.capacities), max(self.capacities), max_new_tokens, self.attention,
                 self.use_graph, compile, self.autotune, self.fused is not None)

    @staticmethod
    def _check_tensor_parallel(adapter: ModelAdapter, graph: bool, compile: bool) -> None:
        """Refuse a graph or compiled decode on sharded heads: not verified on GPUs yet (the uncompiled step
        without a graph is: tests/test_tensor_parallel.py). benchmarks/gpu/tp_decode.py checks it."""
        if getattr(adapter, "head_shards", None) is not None and (graph or compile):
            raise ConfigError("decode.graph/decode.compile", True, "the CUDA-graph / compiled decode under tensor "
                              "parallelism is not verified yet; decode with fast=False (decode.mode eager), or set "
                              "decode.graph and decode.compile to false")

    def _allocate(self) -> None:
        kv_heads, d, dev = self.adapter.num_kv_heads, self.adapter.head_dim, self.device
        # zeros, not empty: a masked slot gets probability 0, and 0 * NaN garbage would still be NaN
        if self.attention == "flash":  # token-major storage, the varlen kernel's layout; [1, kv, cap, d] views
            k_rows = [torch.zeros(c, kv_heads, d, dtype=self.dtype, device=dev) for c in self.capacities]
            v_rows = [torch.zeros_like(k) for k in k_rows]
            self._k_rows, self._v_rows = k_rows, v_rows
            self.keys = [k.permute(1, 0, 2).unsqueeze(0) for k in k_rows]
            self.values = [v.permute(1, 0, 2).unsqueeze(0) for v in v_rows]
            self._cu_q = torch.tensor([0, 1], dtype=torch.int32, device=dev)
            self._cu_k = [torch.tensor([0, c], dtype=torch.int32, device=dev) for c in self.capacities]
        else:
            self.keys = [torch.zeros(1, kv_heads, c, d, dtype=self.dtype, device=dev) for c in self.capacities]
            self.values = [torch.zeros_like(k) for k in self.keys]
        self.bias = [torch.full((1, 1, 1, c), float("-inf"), dtype=self.dtype, device=dev) for c in self.capacities]
        self.lens = torch.zeros(self.adapter.num_layers, dtype=torch.long, device=dev)
        self.n_prompt = torch.zeros(1, dtype=torch.long, device=dev)
        self.step = torch.zeros(1, dtype=torch.long, device=dev)
        self.token = torch.zeros(1, 1, dtype=torch.long, device=dev)
        self.generated = torch.zeros(self.max_new_tokens, dtype=torch.long, device=dev)
        self.logits: torch.Tensor | None = None

    # construction ------------------------------------------------------------------------------
    @classmethod
    def for_prefill(cls, adapter: ModelAdapter, prefill: PrefillResult, max_new_tokens: int,
                    options: DecodeSection | None = None) -> StaticDecoder:
        """A decoder sized for this prefill's per-layer token counts plus ``max_new_tokens``."""
        keys = prefill.cache.layer_keys(0)
        caps = [n + max_new_tokens - 1 for n in prefill.tokens_per_layer]
        return cls(adapter, caps, max_new_tokens, dtype=keys.dtype, device=keys.device, options=options)

    def fits(self, prefill: PrefillResult, max_new_tokens: int) -> bool:
        keys = prefill.cache.layer_keys(0)
        return (
            max_new_tokens <= self.max_new_tokens
            and keys.dtype == self.dtype
            and keys.device == self.device
            and all(n + max_new_tokens - 1 <= c for n, c in zip(prefill.tokens_per_layer, self.capacities))
            and (self.fused is None or self.fused.valid_for(self.adapter))  # projections replaced: rebuild
        )

    def offer_buffers(self, cache: KVCacheManager) -> None:
        """Offer this decoder's buffers to ``cache`` before a prefill: a manager that takes them writes each
        layer's prompt KV straight into them where it fits (then :meth:`load` copies nothing)."""
        cache.offer_static_buffers(self.keys, self.values, self.max_new_tokens - 1)

    # per request -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def load(self, prefill: PrefillResult, first_token: torch.Tensor) -> None:
        """Take the prompt KV of ``prefill`` and the first generated token; reset the step counter."""
        if self.fused is not None:
            self.fused.refresh()  # the model's weights changed in place since: copy them in again
        cache = prefill.cache
        tokens = prefill.tokens_per_layer
        if any(n + self.max_new_tokens - 1 > c for n, c in zip(tokens, self.capacities)):
            raise InputError("static decode: the prompt does not fit this decoder's buffers; build a new one")
        for layer, n in enumerate(tokens):
            keys = cache.layer_keys(layer)
            if keys.data_ptr() != self.keys[layer].data_ptr():  # not written into the offered buffers
                self.keys[layer][:, :, :n].copy_(keys[:, :, :n])
                self.values[layer][:, :, :n].copy_(cache.layer_values(layer)[:, :, :n])
            self.bias[layer].fill_(float("-inf"))
            self.bias[layer][..., :n] = 0.0
        self.lens.copy_(torch.tensor(tokens, dtype=torch.long))
        self.n_prompt.fill_(prefill.next_position)
        self.step.zero_()
        self.token.copy_(first_token.reshape(1, 1))
        self.generated.zero_()
        self.generated[:1].copy_(first_token.reshape(1))
        self._steps_done = 0
        if self.use_graph and self.graph is None and self.graph_error is None and self.max_new_tokens > 1:
            self._capture()
            self.load(prefill, first_token)  # capture's warm-up steps moved the state on

    @torch.inference_mode()
    def decode(self, steps: int, sink: TokenSink | None = None) -> int:
        """Run ``steps`` decode steps (each feeds its greedy token to the next); returns the steps run.

        Without a ``sink`` nothing waits for the host: n steps cost n replays and one sync at the end. With
        one (streaming), each step's token is copied to pinned host memory without blocking and handed to
        the sink one step late, once the next step is queued, so the device does not idle while the host
        reads; the decode stops after a token the sink stops at (EOS), having run at most one step more.
        What streaming costs is that the host waits for every step's token instead of queueing all steps
        at once: launch overhead is no longer hidden behind the device's work, which shows on small models
        (benchmarks/gpu/stream_cost.py measures it). Nothing of this runs without a streamer.
        """
        reserved = self._reserve(steps)
        if sink is None:
            for _ in range(steps):
                self._run_step()
            return steps
        host = HostTokens(self.device)
        for step in range(steps):
            self._run_step()
            host.push(self.token)
            if step > 0 and sink.take(host.pop()):
                self._steps_done = reserved - (steps - step - 1)
                return step + 1
        sink.take(host.pop())
        return steps

    def _run_step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.logits = self._step_fn()

    @torch.inference_mode()
    def decode_forced(self, tokens: Sequence[int]) -> tuple[list[int], list[torch.Tensor]]:
        """Teacher-forced steps: feed ``tokens[i]`` at step i; return each step's greedy token and logits
        (for agreement checks against another decoder fed the same tokens)."""
        self._reserve(len(tokens))
        picked, logits = [], []
        for t in tokens:
            self.token.fill_(int(t))
            self._run_step()
            logits.append(self.logits.float().clone())
            picked.append(int(self.token))
        return picked, logits

    def _reserve(self, steps: int) -> int:
        """Slots are checked here, on the host: an index past a buffer would be a device-side assert. Returns
        the steps done once these have run."""
        done = self._steps_done
        if done is None:
            raise InputError("decode: load a prefill first")
        if done + steps > self.max_new_tokens - 1:
            raise InputError(f"decode: {done} + {steps} steps; this decoder holds {self.max_new_tokens - 1} "
                             "after the first token")
        self._steps_done = done + steps
        return self._steps_done

    def tokens(self, n: int) -> list[int]:
        return self.generated[:n].tolist()

    # the step ---------------------------------------------------------------------------------------
    def _capture(self) -> None:
        start = time.perf_counter()
        try:
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up (lazy inits, cuBLAS handles, compilation), always as step 0
                    self.step.zero_()
                    self._step_fn()
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self._step_fn()
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - fall back to running the static step eagerly
            self.graph = None
            self.graph_error = f"{type(exc).__name__}: {exc}"
            log.warning("static decode: CUDA graph capture failed (%s); decoding without a graph and "
                        "uncompiled (slower)", " ".join(self.graph_error.split())[:300])
            self._uncompile()
            torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - start
        if self.graph is not None:
            log.debug("captured the static decode step as a CUDA graph in %.1f s", self.capture_s)

    def _step(self) -> torch.Tensor:
        return self._segment(None, 0, self.adapter.num_layers)

    def _segment(self, carry: Any, first: int, last: int) -> Any:
        """Layers ``first .. last - 1`` of one decode step. The segment that starts at layer 0 embeds the
        token; the one that ends at the last layer computes the logits, writes the greedy token and moves
        the step on, and returns the logits. Any other segment returns its carry (hidden, RoPE, slots,
        used): a subclass that must run uncompiled work between layers (offload: the block copies)
        compiles the segments and calls them in turn."""
        adapter, parts = self.adapter, self._parts
        if first == 0:
            hidden = adapter.embed(self.token)
            pe = adapter.rotary(hidden, (self.n_prompt + self.step).view(1, 1))
            slots = self.lens + self.step  # this token's slot in every layer's buffer
            used = (slots + 1).to(torch.int32) if self._flash is not None else None
        else:
            hidden, pe, slots, used = carry
        for layer in range(first, last):
            q, k, v = parts.qkv(layer, hidden, pe)
            slot = slots[layer : layer + 1]
            self.keys[layer].index_copy_(2, slot, k)
            self.values[layer].index_copy_(2, slot, v)
            out = self._attend(layer, q, slot, used)
            hidden = parts.output(layer, hidden, out)
            hidden = parts.mlp(layer, hidden)
            self._after_layer(layer, q)
        if last < adapter.num_layers:
            return hidden, pe, slots, used
        logits = adapter.logits(hidden)[:, -1]
        picked = logits.argmax(dim=-1)
        self.token.copy_(picked.view(1, 1))
        self.generated.index_copy_(0, self.step + 1, picked)
        self.step.add_(1)
        return logits

    def _after_layer(self, layer: int, q: torch.Tensor) -> None:
        """Hook for subclasses that keep state from inside the step (offload: the recent queries)."""

    def _compiled_step(self) -> Any:
        """The step under torch.compile (subclasses may compile parts of it instead)."""
        return compile_static(self._step, self.autotune)

    def _uncompile(self) -> None:
        """Run the step uncompiled from now on (after a failed capture: no second compilation)."""
        self._step_fn, self.compiled = self._step, False

    def _attend(self, layer: int, q: torch.Tensor, slot: torch.Tensor, used: torch.Tensor | None) -> torch.Tensor:
        """Attention of the one query token over the layer's buffer; ``[1, 1, q_heads * d]``."""
        d = q.shape[-1]
        if used is not None:
            out = flash_attend(self._flash, q.reshape(1, self._q_heads, d), self._k_rows[layer], self._v_rows[layer],
                                self._cu_q, self._cu_k[layer], used[layer : layer + 1], self._scales[layer])
            return out.reshape(1, 1, -1)
        self.bias[layer].index_fill_(-1, slot, 0.0)
        return MASKED_KERNELS[self.attention](q, self.keys[layer], self.values[layer], self.bias[layer],
                                              self._scales[layer])

    def kv_bytes(self) -> int:
        """Bytes of the static KV buffers (capacity, not use)."""
        return sum(2 * k.numel() * k.element_size() for k in self.keys)

    def stats(self) -> dict[str, Any]:
        """Counters of the decode (none here; a manager's own static decoder adds its swaps)."""
        return {}
