"""The ``transformers`` engine: an in-process Hugging Face model; the fallback where vLLM is absent.

Prompts are batched with LEFT padding (so every row's next token sits at the last position),
the chat template is applied to message prompts, and ``n`` samples come from
``num_return_sequences``. Sampling is set fully explicitly (``top_k=0``: transformers would
otherwise apply its global default top-k of 50, which vLLM does not) and seeded per call.
Greedy decoding (``temperature == 0``) returns the one greedy answer ``n`` times, as vLLM does.

``score_choices`` reads the next-token distribution after each prompt (``log_softmax`` of the
last logits), keeps the top-k and folds it with ``option_logprobs``: the same semantics as
vLLM's ``max_tokens=1, logprobs=k``. Those logits are computed in float32 whatever the weights'
dtype: the base model's final (normed) hidden state at the last position goes through the output
embedding as ``F.linear(h.float(), W.float(), b)``, as the vllm engine does with vLLM's
``head_dtype``. A bf16 head rounds logits near 20 to steps of 0.125, which would put the judge's
soft labels on a handful of values (tests/test_dtype.py::test_transformers_bf16_scores_use_a_float32_head).
Heads that rescale their logits (``final_logit_softcapping``, ``logit_scale``) keep the model's
own ``.logits``.
"""

from __future__ import annotations

import logging
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
)
from generator.engines.chat import cut_at_stop, prompt_ids
from generator.models import display_name, resolve

log = logging.getLogger(__name__)


class TransformersEngine(ClosingEngine):
    """Batched generation and choice scoring with ``AutoModelForCausalLM``."""

    name = "transformers"

    def __init__(self, model: str | None = None, *, batch_size: int = 8, device: str | None = None,
                 dtype: str | None = None, seed: int | None = None, **model_kwargs):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = display_name(model)
        self.path = resolve(model)
        self.seed = seed  # sampling is seeded per call from Sampling.seed; recorded for provenance
        self.batch_size = max(1, int(batch_size))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.dtype = str(torch_dtype).removeprefix("torch.")
        started = time.perf_counter()
        self._tok = AutoTokenizer.from_pretrained(self.path)
        self._tok.padding_side = "left"
        self._model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype, **model_kwargs)
        self._model.to(self.device).eval()
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        eos = self._model.generation_config.eos_token_id
        eos = eos if eos is not None else self._tok.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.max_context = int(getattr(self._model.config, "max_position_embeddings", 0) or 2048)
        self._stats = {"requests": 0, "prompt_tokens": 0, "generated_tokens": 0, "seconds": 0.0,
                       "startup_seconds": round(time.perf_counter() - started, 2)}
        log.info("transformers engine on %s (%s, %s) ready", self.path, self.device, torch_dtype)

    # -- helpers ---------------------------------------------------------------------------
    def _live(self):
        if self._model is None:
            raise EngineError("the transformers engine is closed")
        return self._model

    def _ids(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        out = []
        for i, p in enumerate(prompts):
            ids = prompt_ids(self._tok, p)
            if len(ids) >= self.max_context:
                raise EngineError(f"prompt {i} has {len(ids)} tokens but the model context is {self.max_context}")
            out.append(ids)
        return out

    def _pad_left(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _completion(self, new_ids: list[int], stop: Sequence[str]) -> Completion:
        # Generated tokens up to the first EOS (counted, as vLLM counts it) or padding.
        n, finish = len(new_ids), "length"
        for j, t in enumerate(new_ids):
            if t in self._eos_ids or t == self._pad_id:
                n, finish = j + (1 if t in self._eos_ids else 0), "stop"
                break
        text = self._tok.decode(new_ids[:n], skip_special_tokens=True)
        text, hit = cut_at_stop(text, stop)
        if hit:
            finish = "stop"
            # A row stopped by a stop string is padded after it; with pad == eos, do not count that pad.
            if n and new_ids[n - 1] in self._eos_ids:
                n -= 1
        return Completion(text=text, num_tokens=n, finish_reason=finish)

    # -- interface -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        import torch

        model = self._live()
        rows = self._ids(prompts)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        greedy = sampling.temperature <= 0
        n_seq = 1 if greedy else sampling.n
        gen_kwargs = dict(max_new_tokens=sampling.max_tokens, do_sample=not greedy, num_return_sequences=n_seq,
                          pad_token_id=self._pad_id, eos_token_id=sorted(self._eos_ids) or None)
        if not greedy:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=self._tok)
        started = time.perf_counter()
        out: list[list[Completion]] = []
        for b in range(0, len(rows), self.batch_size):
            chunk = rows[b:b + self.batch_size]
            ids, mask = self._pad_left(chunk)
            with torch.inference_mode():
                seqs = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
            new = seqs[:, ids.shape[1]:].tolist()
            for i in range(len(chunk)):
                samples = [self._completion(new[i * n_seq + k], sampling.stop) for k in range(n_seq)]
                out.append(samples * sampling.n if greedy else samples)
            self._stats["prompt_tokens"] += sum(len(r) for r in chunk)
        self._stats["seconds"] += time.perf_counter() - started
        self._stats["requests"] += len(rows)
        self._stats["generated_tokens"] += sum(c.num_tokens for cs in out for c in cs)
        return out

    @staticmethod
    def _float32_head(model):
        """(weight, bias) of the output embedding in float32, or None where the model's own head
        must be used (no separate base model, or logits rescaled after the projection)."""
        import torch

        config = model.config
        out = model.get_output_embeddings()
        rescaled = getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", 1.0) != 1.0
        if out is None or model.base_model is model or rescaled or not hasattr(out, "weight"):
            if model.dtype != torch.float32:
                log.warning("choice scoring of %s reads logits in %s", type(model).__name__, model.dtype)
            return None
        bias = getattr(out, "bias", None)
        return out.weight.float(), None if bias is None else bias.float()

    @staticmethod
    def _next_token_logits(model, ids, mask, head):
        """float32 logits of the token after each (left-padded) row: the final hidden state of the
        last position times the float32 output embedding (``head``), or the model's own logits."""
        import torch
        import torch.nn.functional as F

        # Left padding shifts positions: give each row positions counted from its own first token.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            if head is None:
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
                return logits[:, -1, :].float()
            h = model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1, :]
            return F.linear(h.float(), *head)

    def score_choices(self, prompts: Sequence[str], options: Sequence[str], top_k: int = 20) -> list[ChoiceScores]:
        import torch

        model = self._live()
        rows = self._ids(prompts)
        started = time.perf_counter()
        out: list[ChoiceScores] = []
        head = self._float32_head(model)
        for b in range(0, len(rows), self.batch_size):
            ids, mask = self._pad_left(rows[b:b + self.batch_size])
            logp = torch.log_softmax(self._next_token_logits(model, ids, mask, head), dim=-1)
            vals, idx = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
            for v_row, i_row in zip(vals.tolist(), idx.tolist(), strict=True):
                top: dict[str, float] = {}
                for v, i in zip(v_row, i_row, strict=True):
                    tok = self._tok.decode([i])
                    add_logprob(top, tok, v)
                out.append(ChoiceScores(logprobs=option_logprobs(top, options), top=top))
        self._stats["seconds"] += time.perf_counter() - started
        self._stats["requests"] += len(rows)
        return out

    def count_tokens(self, prompt: Prompt) -> int:
        return len(prompt_ids(self._tok, prompt))

    def stats(self) -> dict:
        s = dict(self._stats)
        s["seconds"] = round(s["seconds"], 3)
        if s["seconds"]:
            s["generated_tok_s"] = round(s["generated_tokens"] / s["seconds"], 2)
        return s

    def close(self) -> None:
        """Drop the model and free its memory; calling it again does nothing."""
        if self._model is None:
            return
        self._model = None
        release_memory()
