"""The conformance checks: each takes a :class:`~sliminfer.testing.subject.Subject` and raises
AssertionError, with the numbers, when the strategy breaks a rule every strategy must keep.

The yardsticks are independent of the code under test: stock transformers (``model(...)`` and
``model.generate``) for unpruned runs and for a prompt filter's second pass (run stock on the kept ids),
and the full-length masked reference (:class:`~sliminfer.testing.reference.ScoringReference`) for pruned
ones. The eager decode is the
yardstick of the static one, which the reference cannot run. :mod:`sliminfer.testing.conformance`
says which checks each kind must pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sliminfer.decode.run import static_generate
from sliminfer.testing.reference import Scored, ScoringReference, pipeline_greedy
from sliminfer.testing.subject import Subject

if TYPE_CHECKING:
    from sliminfer.core.pipeline import SlimPipeline
    from sliminfer.core.results import PrefillResult

#: fp32 tolerance against the masked reference: it sums over all positions with masked ones at zero
#: weight, the pipeline over fewer, so only the summation order differs
REFERENCE_TOL = 1e-4
#: fp32 tolerance against stock transformers where the same modules run in the same order
STOCK_TOL = 1e-5
#: greedy decode steps the decode checks take, and the shorter generations of the reset check
DECODE_STEPS, RESET_STEPS = 16, 4
#: what static_generate runs on the CPU: the static step itself, without a CUDA graph or compilation
STATIC_OPTIONS = {"graph": False, "compile": False}


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _first_difference(a: list[int], b: list[int]) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"first difference at token {i} of {max(len(a), len(b))}: {a[i:i + 4]} vs {b[i:i + 4]}"


def _kept_difference(layer: int, ours: torch.Tensor, ref: ScoringReference, size: int) -> str:
    """Where the pipeline's kept positions at ``layer`` leave the reference's, with the reference's scores
    of the blocks only one of them kept (a near-tie shows up as two nearly equal scores)."""
    theirs = ref.kept[layer]
    text = f"layer {layer} holds {ours.numel()} prompt positions, the reference {theirs.numel()}"
    scored: list[Scored] = [d for d in ref.scored if d.layer == layer - 1]
    if scored:
        before = ref.kept[layer - 1]
        n_full = before.numel() // size
        blocks = [{int(i) // size for i in torch.searchsorted(before, kept) if i < n_full * size}
                  for kept in (ours, theirs)]
        scores = scored[0].scores[0]
        listed = {b: round(float(scores[b]), 6) for b in sorted(blocks[0] ^ blocks[1]) if b < n_full}
        text += (f"; after layer {layer - 1} the pipeline kept blocks {sorted(blocks[0] - blocks[1])} and the reference "
                 f"{sorted(blocks[1] - blocks[0])} (reference scores of those blocks: {listed})")
    return text


def pruned_prefill_matches_reference(s: Subject) -> None:
    """A pruned prefill keeps, at every layer, the positions the reference keeps, and gives its logits."""
    model = s.model()
    ids = s.prompts()[0]
    n = ids.shape[1]
    result = s.pipeline(model).prefill(ids)
    if result.tokens_per_layer[-1] >= n:
        raise AssertionError(f"nothing was pruned: {n} tokens at every layer, so this check would hold for any "
                             "strategy; give options that prune the prompt")
    ref = ScoringReference(model, n, s.build("scorer"), s.build("schedule"))
    ref_logits = ref.prefill(ids)
    for layer, kept in enumerate(result.kept_positions):
        if not torch.equal(kept.cpu(), ref.kept[layer]):
            raise AssertionError(_kept_difference(layer, kept.cpu(), ref, s.block_size))
    gap = _gap(result.logits, ref_logits)
    assert gap <= REFERENCE_TOL, (f"prefill logits differ from the reference's by {gap:.3g} (tolerance "
                                  f"{REFERENCE_TOL:g}); tokens per layer {result.tokens_per_layer}")


def scores_have_documented_shape(s: Subject) -> None:
    """At each pruning layer ``score_blocks`` gives finite float scores ``[batch, n_full_blocks]``, for a
    batch of two copies as well (the shape of batch one is checked while the reference selects)."""
    scorer = s.build("scorer")
    ids = s.prompts()[0]
    ref = ScoringReference(s.model(), ids.shape[1], scorer, s.build("schedule"))
    ref.prefill(ids)
    assert ref.scored, "the kit's schedule scored no layer"
    for scored in ref.scored:
        scores, n_full = scored.scores, scored.scores.shape[1]
        assert scores.is_floating_point(), f"layer {scored.layer}: scores of dtype {scores.dtype}, not floats"
        bad = int((~torch.isfinite(scores)).sum())
        assert not bad, f"layer {scored.layer}: {bad} of {n_full} block scores are not finite: {scores[0].tolist()}"
        pair = scorer.score_blocks(scored.queries.expand(2, -1, -1, -1), scored.keys.expand(2, -1, -1, -1))
        assert tuple(pair.shape) == (2, n_full), (
            f"layer {scored.layer}: a batch of 2 gave scores of shape {tuple(pair.shape)}, not [2, {n_full}]")
        assert torch.allclose(pair, scores.expand(2, -1), rtol=1e-4, atol=1e-6), (
            f"layer {scored.layer}: each copy in a batch of 2 should score as batch 1 did; differs by {_gap(pair, scores):.3g}")


def state_resets_between_requests(s: Subject) -> None:
    """Prompt A, then B, then A again: the second A gives the first one's tokens, logits and positions."""
    pipe = s.pipeline(s.model())
    a, b = s.prompts()
    first = pipe.generate(a, max_new_tokens=RESET_STEPS)
    pipe.generate(b, max_new_tokens=RESET_STEPS)
    again = pipe.generate(a, max_new_tokens=RESET_STEPS)
    assert again.token_ids == first.token_ids, (
        f"the same prompt after another one: {_first_difference(first.token_ids, again.token_ids)}")
    assert torch.equal(again.prefill.logits, first.prefill.logits), (
        f"the same prompt after another one: prefill logits differ by {_gap(first.prefill.logits, again.prefill.logits):.3g}")
    assert again.prefill.tokens_per_layer == first.prefill.tokens_per_layer and all(
        torch.equal(x, y) for x, y in zip(first.prefill.kept_positions, again.prefill.kept_positions)), (
        f"the same prompt after another one keeps other positions: tokens per layer {first.prefill.tokens_per_layer} "
        f"then {again.prefill.tokens_per_layer}")


def unpruned_prefill_equals_stock(s: Subject) -> None:
    """Unpruned, the prefill's last-token logits are stock transformers' forward, bit for bit (fp32)."""
    model = s.model()
    ids = s.prompts()[0]
    ours = s.pipeline(model, pruned=False).prefill(ids).logits
    with torch.inference_mode():
        stock = model(ids, use_cache=True, logits_to_keep=1).logits[:, -1]
    assert torch.equal(ours, stock), f"unpruned prefill logits differ from stock transformers' by {_gap(ours, stock):.3g}"


def unpruned_decode_matches_stock(s: Subject) -> None:
    """Unpruned, the eager greedy decode gives ``model.generate``'s greedy tokens, and each step's logits
    within :data:`STOCK_TOL`."""
    model = s.model()
    ids = s.prompts()[0]
    _decode_matches_generate(s.pipeline(model, pruned=False), model, ids, ids)


def _decode_matches_generate(pipe: SlimPipeline, model: torch.nn.Module, ids: torch.Tensor,
                             stock_ids: torch.Tensor) -> None:
    """``pipe``'s eager greedy decode of ``ids`` gives ``model.generate``'s greedy tokens of ``stock_ids``,
    each step's logits within :data:`STOCK_TOL`."""
    ours = pipe.generate(ids, max_new_tokens=DECODE_STEPS).token_ids
    with torch.inference_mode():
        stock = model.generate(stock_ids, do_sample=False, max_new_tokens=DECODE_STEPS, min_new_tokens=DECODE_STEPS,
                               output_logits=True, return_dict_in_generate=True)
    stock_tokens = stock.sequences[0, stock_ids.shape[1]:].tolist()
    assert ours == stock_tokens, f"greedy tokens differ from model.generate's: {_first_difference(ours, stock_tokens)}"
    _, logits = pipeline_greedy(pipe, pipe.prefill(ids, reserve_tokens=DECODE_STEPS), DECODE_STEPS - 1)
    gaps = [_gap(a, b) for a, b in zip(logits, stock.logits)]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[worst] <= STOCK_TOL, (f"step {worst} logits differ from model.generate's by {gaps[worst]:.3g} "
                                      f"(tolerance {STOCK_TOL:g})")


def _filtered_ids(s: Subject, model: torch.nn.Module) -> tuple[torch.Tensor, PrefillResult]:
    """The kit's first prompt and its unpruned prefill through the subject's prompt filter, with the
    filter's selection checked: distinct prompt positions, ascending, fewer than the prompt's, held by
    every layer, decoding continuing at position ``m``."""
    ids = s.prompts()[0]
    n = ids.shape[1]
    result = s.pipeline(model, pruned=False).prefill(ids)
    if result.filtered is None:
        raise AssertionError(f"nothing was filtered from the {n}-token prompt, so this check would hold for any "
                             "filter; give options that filter it")
    kept = result.filtered.kept.cpu()
    assert kept.dtype == torch.long and 0 < kept.numel() < n, f"kept {kept.numel()} of {n} tokens ({kept.dtype})"
    assert torch.all(kept[1:] > kept[:-1]) and kept[0] >= 0 and kept[-1] < n, (
        f"kept positions must be distinct prompt positions, ascending: {kept.tolist()}")
    assert result.prompt_tokens == result.filtered.prompt_tokens == n, (
        f"prompt_tokens {result.prompt_tokens} (selection: {result.filtered.prompt_tokens}) for a {n}-token prompt")
    assert result.next_position == kept.numel(), f"next position {result.next_position} after {kept.numel()} kept"
    for layer, positions in enumerate(result.kept_positions):
        assert torch.equal(positions.cpu(), kept), f"layer {layer} holds {positions.numel()} positions, not the kept ones"
    return ids, result


def filtered_prefill_equals_stock_on_kept_ids(s: Subject) -> None:
    """A prompt filter's prefill is stock transformers' forward over the kept token ids alone (positions
    re-encoded ``0 .. m - 1``): its last-token logits bit for bit (fp32)."""
    model = s.model()
    ids, result = _filtered_ids(s, model)
    with torch.inference_mode():
        stock = model(ids[:, result.filtered.kept.cpu()], use_cache=True, logits_to_keep=1).logits[:, -1]
    assert torch.equal(result.logits, stock), (
        f"filtered prefill logits differ from stock transformers' on the kept ids by {_gap(result.logits, stock):.3g}")


def filtered_decode_matches_stock_on_kept_ids(s: Subject) -> None:
    """After a prompt filter the eager greedy decode (continuing at position ``m``) gives
    ``model.generate``'s greedy tokens of the kept ids alone, each step's logits within :data:`STOCK_TOL`."""
    model = s.model()
    ids, result = _filtered_ids(s, model)
    _decode_matches_generate(s.pipeline(model, pruned=False), model, ids, ids[:, result.filtered.kept.cpu()])


def static_decode_matches_eager(s: Subject) -> None:
    """The static decode (``static_generate``: on the CPU its static step without a graph or compilation)
    gives the eager decode's greedy tokens, unpruned and pruned."""
    model = s.model()
    ids = s.prompts()[0]
    for pruned in (False, True):
        pipe = s.pipeline(model, pruned=pruned)
        eager = pipe.generate(ids, max_new_tokens=DECODE_STEPS)
        static = static_generate(pipe, ids, DECODE_STEPS, options=STATIC_OPTIONS)
        assert static.token_ids == eager.token_ids, (
            f"{'pruned' if pruned else 'unpruned'}: static decode tokens differ from the eager decode's: "
            f"{_first_difference(static.token_ids, eager.token_ids)}")
