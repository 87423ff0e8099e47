"""The offload KV cache manager: resident prompt KV in (pinned) CPU memory, active blocks on the GPU.

The paper's second component (method.md, "Decode, and the asynchronous KV cache manager"):

- Prefill: as each layer's attention finishes, its prompt KV (the layer's RESIDENT set: all prompt
  tokens for preserve layers, the survivors for slim layers) is copied to CPU memory on a side CUDA
  stream (``non_blocking`` into pinned buffers); the GPU copy is released as soon as that copy is done
  (``record_stream``), so peak GPU memory never holds the whole prompt KV. Only small per-layer
  extras stay on the GPU: the partial tail after the last full block and, for layers that select at
  decode, the token units' mean keys (float32, 1/``unit_size`` of the keys) used to score blocks.
- Decode: each layer attends to its ACTIVE prompt blocks plus every generated token (generated KV
  always stays on the GPU). A layer whose resident set fits ``decode_budget`` (or with
  ``decode_budget: null``) keeps all its blocks active. Otherwise the active set holds
  ``max(sink_blocks + 1, (decode_budget - tail) // block_size)`` blocks: the first ``sink_blocks``
  (attention sink) and the most recent full prompt block always, the rest chosen by the token-unit
  score (the :class:`~sliminfer.strategies.token_unit.TokenUnitScorer` itself, fed the unit mean keys
  with ``unit_size`` 1: exactly its score on the full keys) with the mean of the ``recent_window``
  most recent decode tokens' queries as the local query; the tail is always active too.
- Overlap-aware swapping: when the new selection overlaps the current active set (forced blocks
  included) by less than ``gamma``, the newly selected blocks are copied in (H2D on a side stream,
  into the slots of the blocks that left, which are thereby released); otherwise nothing moves.

Timing of the selection (an allowed design, see the issue): the selection computed from the queries
of decode steps ``<= t`` is applied at step ``t + 1``. Step 0 is the exception: each selecting
layer's first active set is chosen synchronously from the current (first) decode token's query,
before that layer's attention. So at step ``t >= 1`` a layer's local query is the mean of the queries
of steps ``max(0, t - recent_window) .. t - 1``.

Stream ordering (CUDA): the selection runs on the compute stream and its top-k block ids are copied
to a pinned host buffer with an event. The next step reads them back as early as possible without
blocking (``Event.query()`` at the step's start) and issues the copies then, so they overlap the
compute of the layers before; a group whose read-back is not complete yet is handled when its first
layer is reached (``Event.synchronize()``: only waits if the GPU is a whole step behind the host).
The copy stream waits (``wait_event``) for the previous step's compute before overwriting slots the
previous step read; the compute stream waits (``wait_event``) for a layer's copies before that
layer's attention. No host synchronisation happens in the steady state: the first decode step
synchronises once (initial selections), and a swap costs host work, never a wait. On the CPU the same
logic runs with plain copies (that is what CI checks).

Copies: the chosen blocks are gathered straight from pinned host memory by one kernel per layer
(:mod:`sliminfer.cache.offload.host_alias`), instead of one copy per run of consecutive blocks; a group's
layers upload their block and slot ids together and share one event.

Static decode (``decode.mode: static``): the first ``recent_window`` steps run here, then the state
goes to :class:`~sliminfer.cache.offload.static_decode.OffloadStaticDecoder`, which does the same
selection, slot assignment and copies on the device so that the step can be replayed as a CUDA graph
(equal to this manager's decode: tests/test_offload_decode.py).

Layers that select with the same number of blocks and consecutive indices form a group, scored
together in one batched scorer call (the paper's schedule gives three or four groups), which keeps
the per-step overhead to a few kernel launches per group.

Queries: the manager sets ``wants_queries`` (and ``query_layers``) once the prefill shows that some
layer selects; ``StagedForward.decode_step`` then runs those layers' attention through
``ModelAdapter.attention_block_observed``, which hands the queries (after any q norm and RoPE) to
``observe_query`` (declared by :class:`~sliminfer.cache.base.KVCacheManager`) before the cache update
and the attention, projecting them once.

The one selection policy (sink blocks, the last block, the best-scored rest) is
:mod:`sliminfer.strategies.block_selection`, shared with the prefill's pruning; the swap rule
(hysteresis) is :func:`~sliminfer.cache.offload.selection.apply_swaps`, shared by the eager manager and
the static decode.

Modules: :mod:`.config` (options), :mod:`.state` (per-layer and per-group state), :mod:`.selection`,
:mod:`.transfers` (host <-> device copies; :mod:`.host_alias`, :mod:`.block_copy`), :mod:`.manager`
(the manager), :mod:`.static_decode` (its static decoder).

Layout: host blocks are ``[blocks, 2 (K, V), kv_heads, block, d]`` (one contiguous chunk per block,
so a run of consecutive blocks is one copy); each layer's device buffer is ``[2, 1, kv_heads,
capacity, d]``: the active blocks' slots, the tail, then the generated tokens, and K and V are its two
contiguous halves (the same shapes and strides as the GPU-resident cache's buffers). With every block
active the slots hold the blocks in order, so the attention sees exactly the GPU-resident cache's
tensors.
"""

from sliminfer.cache.offload.config import OffloadConfig
from sliminfer.cache.offload.manager import OffloadingKVManager

__all__ = ["OffloadConfig", "OffloadingKVManager"]
