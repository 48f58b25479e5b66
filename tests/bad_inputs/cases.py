"""The bad-input corpus: each case is a command line that must be refused.

A case names the command line (run as ``python -m rlaif ARGV`` in a fresh folder), the files
to create there first (text, bytes, or ``Make(kind)`` for a run directory or broken parquet
file from ``builders.py``), and a substring of the one line expected on stderr. Every case is
held to the same contract by tests/test_bad_inputs.py: exit code 2, exactly one line on stderr,
no traceback, no engine or model built, nothing created and every file byte-identical afterwards.

``xfail`` marks a case whose code belongs to another area and is not fixed yet: the reason says
what goes wrong (the test is strict, so a fix makes it fail until the mark is removed). ``env`` adds
to (or replaces) the offline environment every case runs in, e.g. a Hub endpoint on a closed port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Make:
    kind: str  # a key of builders.KINDS


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # substring of the single stderr line
    files: dict = field(default_factory=dict)  # relative path -> str | bytes | Make
    max_s: float = 20.0
    xfail: str | None = None
    env: dict = field(default_factory=dict)  # environment variables set on top of the offline defaults


PROMPTS = {"p.jsonl": '{"prompt": "How do I keep basil alive?"}\n{"prompt": "Name a prime."}\n'}
PAIRS = {"pairs.jsonl": '{"prompt": "hi", "response_a": "hello", "response_b": "go away"}\n'}
HH = {"hh.jsonl": '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: hello", '
                  '"rejected": "\\n\\nHuman: hi\\n\\nAssistant: go away"}\n'}
GEN_RUN, REV_RUN, JUDGE_RUN = Make("generate_run"), Make("revise_run"), Make("judge_run")


def constitution(compare: str = "Which response is less harmful?", ids: tuple[str, ...] = ("harm",),
                 extra: str = "") -> str:
    """A small valid constitution, with one field or another made bad by the caller."""
    out = "name: test\nversion: 1\n" + extra + "principles:\n"
    for pid in ids:
        out += (f"  - id: {pid}\n    critique: \"Find harm.\"\n    revision: \"Remove harm.\"\n"
                f"    compare: {compare!r}\n")
    return out


HOSTILE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
EVIL_PY = '''\
from pathlib import Path

from generator.engines.base import EngineBase


def make(*args, **kwargs):
    Path("pwned-function").write_text("ran")


class NotAnEngine:
    def __init__(self, *args, **kwargs):
        Path("pwned-class").write_text("ran")


class HalfEngine(EngineBase):
    def __init__(self, *args, **kwargs):
        Path("pwned-half").write_text("ran")

    def close(self):
        pass
'''
EVIL = {"evil.py": EVIL_PY}
BAD_URL_S = 10.0  # a malformed --base-url is refused at once: no connection, no retries


def _generate(*extra: str) -> tuple[str, ...]:
    return ("generate", "--prompts", "p.jsonl", "--out", "gen", *extra)


def _revise(*extra: str) -> tuple[str, ...]:
    return ("revise", "--prompts", "p.jsonl", "--out", "sft", "--constitution", "c.yaml", *extra)


def _judge(*extra: str) -> tuple[str, ...]:
    return ("judge", "--input", "pairs.jsonl", "--out", "prefs", *extra)


def _judge_eval(*extra: str) -> tuple[str, ...]:
    return ("judge-eval", "--human", "hh.jsonl", "--out", "eval", *extra)


def _serve(*extra: str) -> tuple[str, ...]:
    return ("engine", "serve", "--print-command", *extra)


C = Case
OK_CONST = {"c.yaml": constitution()}

GENERATE = [
    C("generate-out-empty-string-overwrite", ("generate", "--prompts", "p.jsonl", "--out", "", "--overwrite"),
      "--out must name a folder of its own", PROMPTS),
    C("generate-out-dot-overwrite", ("generate", "--prompts", "p.jsonl", "--out", ".", "--overwrite"),
      "--out must name a folder of its own", PROMPTS),
    C("generate-out-user-folder-overwrite", _generate("--overwrite"), "is not an rlaif run directory",
      {**PROMPTS, "gen/notes.txt": "mine"}),
    C("generate-out-judge-run-overwrite", _generate("--overwrite"), "holds a 'judge' run",
      {**PROMPTS, "gen": JUDGE_RUN}),
    C("generate-out-is-a-file", ("generate", "--prompts", "p.jsonl", "--out", "p.jsonl"), "is a file", PROMPTS),
    C("generate-prompts-missing", _generate(), "p.jsonl: no such file", {}),
    C("generate-prompts-folder", ("generate", "--prompts", "stuff", "--out", "gen"), "is a folder",
      {"stuff/a.jsonl": '{"prompt": "x"}\n'}),
    C("generate-prompts-judge-run", ("generate", "--prompts", "prefs", "--out", "gen"), "'judge' run",
      {"prefs": JUDGE_RUN}),
    C("generate-prompts-corrupt-parquet", ("generate", "--prompts", "p.parquet", "--out", "gen"),
      "p.parquet: cannot read", {"p.parquet": Make("corrupt_parquet")}),
    C("generate-prompts-truncated-parquet", ("generate", "--prompts", "p.parquet", "--out", "gen"),
      "p.parquet: cannot read", {"p.parquet": Make("prompts_parquet_truncated")}),
    C("generate-prompts-binary-jsonl", _generate(), "not UTF-8", {"p.jsonl": bytes(range(256)) * 4}),
    C("generate-prompts-not-gzip", ("generate", "--prompts", "p.jsonl.gz", "--out", "gen"), "cannot read",
      {"p.jsonl.gz": '{"prompt": "plain text, not gzip"}\n'}),
    C("generate-prompts-unknown-type", ("generate", "--prompts", "p.txt", "--out", "gen"), "unknown file type",
      {"p.txt": "hello\n"}),
    C("generate-prompts-json-not-a-list", ("generate", "--prompts", "p.json", "--out", "gen"),
      "must hold a list", {"p.json": '{"a": 1, "b": 2}'}),
    C("generate-prompts-empty-file", _generate(), "--allow-empty", {"p.jsonl": ""}),
    C("generate-prompts-header-only-csv", ("generate", "--prompts", "p.csv", "--out", "gen"), "--allow-empty",
      {"p.csv": "prompt\n"}),
    C("generate-prompt-column-no-row-has", _generate("--prompt-column", "question"), "no column 'question'",
      PROMPTS),
    C("generate-prompts-all-blank", _generate(), "--allow-empty", {"p.jsonl": '{"prompt": "  "}\n{"prompt": ""}\n'}),
    C("generate-n-zero", _generate("--n", "0"), "n: Input should be greater than or equal to 1", PROMPTS),
    C("generate-max-tokens-zero", _generate("--max-tokens", "0"), "--max-tokens", PROMPTS),
    C("generate-limit-zero", _generate("--limit", "0"), "limit", PROMPTS),
    C("generate-batch-size-zero", _generate("--batch-size", "0"), "--batch-size", PROMPTS),
    C("generate-temperature-negative", _generate("--temperature", "-1"), "temperature", PROMPTS),
    C("generate-top-p-two", _generate("--top-p", "2"), "--top-p", PROMPTS),
    C("generate-engine-bogus", _generate("--engine", "bogus"), "unknown engine 'bogus'", PROMPTS),
    C("generate-engine-os-system", _generate("--engine", "os:system", "--model", "touch pwned"),
      "is not a class", PROMPTS),
    C("generate-engine-subprocess-popen", _generate("--engine", "subprocess:Popen", "--model", "true"),
      "not derived from generator.engines.base.EngineBase", PROMPTS),
    C("generate-engine-user-function", _generate("--engine", "evil:make"), "is not a class", {**PROMPTS, **EVIL}),
    C("generate-engine-user-class-not-engine", _generate("--engine", "evil:NotAnEngine"),
      "not derived from generator.engines.base.EngineBase", {**PROMPTS, **EVIL}),
    C("generate-engine-user-class-abstract", _generate("--engine", "evil:HalfEngine"), "does not implement",
      {**PROMPTS, **EVIL}),
    C("generate-model-missing-folder", _generate("--model", "./no-model"), "model ./no-model: no such model folder",
      PROMPTS),
    C("generate-engine-module-missing", _generate("--engine", "no_such_module_xyz:Engine"), "cannot be imported",
      PROMPTS),
    C("generate-base-url-not-a-url", _generate("--base-url", "notaurl"), "is not an http(s)://host[:port] URL",
      PROMPTS, max_s=BAD_URL_S),
    C("generate-base-url-no-host", _generate("--base-url", "http://"), "is not an http(s)://host[:port] URL",
      PROMPTS, max_s=BAD_URL_S),
    C("generate-base-url-ftp", _generate("--base-url", "ftp://x"), "is not an http(s)://host[:port] URL",
      PROMPTS, max_s=BAD_URL_S),
    C("generate-base-url-port-out-of-range", _generate("--base-url", "http://host:99999"), "is not a valid URL",
      PROMPTS, max_s=BAD_URL_S),
    C("generate-base-url-with-vllm", _generate("--engine", "vllm", "--base-url", "http://127.0.0.1:8000/v1"),
      "only used by the openai engine", PROMPTS, max_s=BAD_URL_S),
]

REVISE = [
    C("revise-constitution-missing", _revise(), "c.yaml: file not found", PROMPTS),
    C("revise-constitution-folder", _revise(), "is a folder", {**PROMPTS, "c.yaml/x": "y"}),
    C("revise-constitution-binary", _revise(), "binary file", {**PROMPTS, "c.yaml": b"name: x\0\1\2"}),
    C("revise-constitution-yaml-error", _revise(), "YAML syntax error", {**PROMPTS, "c.yaml": "name: [unclosed\n"}),
    C("revise-constitution-duplicate-ids", _revise(), "harm", {**PROMPTS, "c.yaml": constitution(ids=("harm", "harm"))}),
    C("revise-constitution-hostile-jinja", _revise(), "c.yaml", {**PROMPTS, "c.yaml": constitution(compare=HOSTILE)}),
    C("revise-rounds-zero", _revise("--rounds", "0"), "rounds", {**PROMPTS, **OK_CONST}),
    C("revise-templates-missing", _revise("--templates", "no-such-templates"), "no-such-templates",
      {**PROMPTS, **OK_CONST}),
    C("revise-prompts-empty-file", _revise(), "--allow-empty", {"p.jsonl": "", **OK_CONST}),
    C("revise-engine-bogus", _revise("--engine", "bogus"), "unknown engine 'bogus'", {**PROMPTS, **OK_CONST}),
    C("revise-base-url-with-transformers", _revise("--engine", "transformers", "--base-url", "http://h:1/v1"),
      "only used by the openai engine", {**PROMPTS, **OK_CONST}, max_s=BAD_URL_S),
    C("revise-out-empty-string-overwrite", ("revise", "--prompts", "p.jsonl", "--out", "", "--constitution",
                                            "c.yaml", "--overwrite"),
      "--out must name a folder of its own", {**PROMPTS, **OK_CONST}),
]

JUDGE = [
    C("judge-input-corrupt-parquet", ("judge", "--input", "pairs.parquet", "--out", "prefs"),
      "pairs.parquet: cannot read", {"pairs.parquet": Make("corrupt_parquet")}),
    C("judge-input-truncated-shard", ("judge", "--input", "gen", "--out", "prefs"), "unreadable shard",
      {"gen": Make("generate_run_truncated")}),
    C("judge-input-judge-run", ("judge", "--input", "old", "--out", "prefs"), "is a 'judge' run",
      {"old": JUDGE_RUN}),
    C("judge-input-empty-file", _judge(), "--allow-empty", {"pairs.jsonl": ""}),
    C("judge-input-header-only-csv", ("judge", "--input", "pairs.csv", "--out", "prefs"), "--allow-empty",
      {"pairs.csv": "prompt,response_a,response_b\n"}),
    C("judge-input-run-without-rows", ("judge", "--input", "gen", "--out", "prefs"), "has no rows",
      {"gen": Make("generate_run_no_rows")}),
    C("judge-input-missing-columns", _judge(), "missing column(s) response_a, response_b",
      {"pairs.jsonl": '{"prompt": "hi"}\n'}),
    C("judge-input-missing", _judge(), "no such file or folder", {}),
    C("judge-input-folder-not-a-run", ("judge", "--input", "stuff", "--out", "prefs"), "not a run directory",
      {"stuff/a.txt": "x"}),
    C("judge-cot-samples-without-cot", _judge("--cot-samples", "8"), "--cot-samples is only used with --cot", PAIRS),
    C("judge-principles-per-pair-zero", _judge("--principles-per-pair", "0"), "--principles-per-pair", PAIRS),
    C("judge-min-confidence-two", _judge("--min-confidence", "2"), "--min-confidence", PAIRS),
    C("judge-batch-size-zero", _judge("--batch-size", "0"), "--batch-size", PAIRS),
    C("judge-limit-zero", _judge("--limit", "0"), "limit", PAIRS),
    C("judge-orders-bogus", _judge("--orders", "three"), "orders", PAIRS),
    C("judge-pairing-bogus", _judge("--pairing", "random"), "pairing", PAIRS),
    C("judge-engine-bogus", _judge("--engine", "bogus"), "unknown engine 'bogus'", PAIRS),
    C("judge-engine-os-system", _judge("--engine", "os:system", "--model", "touch pwned"), "is not a class", PAIRS),
    C("judge-base-url-ftp", _judge("--base-url", "ftp://x"), "is not an http(s)://host[:port] URL", PAIRS,
      max_s=BAD_URL_S),
    C("judge-base-url-port-out-of-range", _judge("--base-url", "http://host:99999"), "is not a valid URL", PAIRS,
      max_s=BAD_URL_S),
    C("judge-base-url-with-vllm", _judge("--engine", "vllm", "--base-url", "http://127.0.0.1:8000/v1"),
      "only used by the openai engine", PAIRS, max_s=BAD_URL_S),
    C("judge-out-user-folder-overwrite", _judge("--overwrite"), "is not an rlaif run directory",
      {**PAIRS, "prefs/notes.txt": "mine"}),
    C("judge-out-generate-run-overwrite", _judge("--overwrite"), "holds a 'generate' run",
      {**PAIRS, "prefs": GEN_RUN}),
    C("judge-constitution-hostile-jinja", _judge("--constitution", "c.yaml"), "c.yaml",
      {**PAIRS, "c.yaml": constitution(compare=HOSTILE)}),
    C("judge-constitution-duplicate-ids", _judge("--constitution", "c.yaml"), "harm",
      {**PAIRS, "c.yaml": constitution(ids=("harm", "harm"))}),
    C("judge-templates-missing", _judge("--templates", "no-such-templates"), "no-such-templates", PAIRS),
]

JUDGE_EVAL = [
    C("judge-eval-human-revise-run", ("judge-eval", "--human", "sft", "--out", "eval"), "is a run directory (a 'revise' run)",
      {"sft": REV_RUN}),
    C("judge-eval-human-missing", _judge_eval(), "hh.jsonl", {}),
    C("judge-eval-human-corrupt-parquet", ("judge-eval", "--human", "hh.parquet", "--out", "eval"), "hh.parquet",
      {"hh.parquet": Make("corrupt_parquet")}),
    C("judge-eval-human-empty-file", _judge_eval(), "hh.jsonl", {"hh.jsonl": ""}),
    C("judge-eval-human-wrong-columns", _judge_eval(), "chosen", {"hh.jsonl": '{"prompt": "hi"}\n'}),
    C("judge-eval-out-user-folder", _judge_eval(), "is not an rlaif run directory", {**HH, "eval/notes.txt": "mine"}),
    C("judge-eval-out-empty-string-overwrite", ("judge-eval", "--human", "hh.jsonl", "--out", "", "--overwrite"),
      "--out must name a folder of its own", HH),
    C("judge-eval-limit-zero", _judge_eval("--limit", "0"), "limit", HH),
    C("judge-eval-offset-negative", _judge_eval("--offset", "-1"), "offset", HH),
    C("judge-eval-principles-per-pair-zero", _judge_eval("--principles-per-pair", "0"), "--principles-per-pair", HH),
    C("judge-eval-engine-os-system", _judge_eval("--engine", "os:system", "--model", "touch pwned"),
      "is not a class", HH),
    C("judge-eval-base-url-not-a-url", _judge_eval("--base-url", "notaurl"), "is not an http(s)://host[:port] URL",
      HH, max_s=BAD_URL_S),
]

PUBLISH = [
    C("publish-repo-id-bad", ("publish", "prefs", "--repo-id", "not a repo/x y", "--dry-run", "out"),
      "is not a valid Hub id", {"prefs": JUDGE_RUN}),
    C("publish-generate-run", ("publish", "gen", "--repo-id", "me/data", "--dry-run", "out"), "not a judge run",
      {"gen": GEN_RUN}),
    C("publish-dry-run-into-non-empty-folder", ("publish", "prefs", "--repo-id", "me/data", "--dry-run", "out"),
      "is not an empty folder", {"prefs": JUDGE_RUN, "out/keep.txt": "mine"}),
    C("publish-run-missing", ("publish", "nope", "--repo-id", "me/data", "--dry-run", "out"), "not a run directory",
      {}),
    C("publish-test-size-one", ("publish", "prefs", "--repo-id", "me/data", "--dry-run", "out", "--test-size", "1"),
      "--test-size", {"prefs": JUDGE_RUN}),
    C("publish-truncated-shard", ("publish", "prefs", "--repo-id", "me/data", "--dry-run", "out"),
      "unreadable shard", {"prefs": Make("judge_run_truncated")}),
    C("publish-constitution-mismatch", ("publish", "prefs", "--repo-id", "me/data", "--dry-run", "out",
                                        "--constitution", "c.yaml"), "does not match", {"prefs": JUDGE_RUN, **OK_CONST}),
]

ALIGN = [
    C("align-dpo-data-truncated-shard", ("align", "dpo", "--data", "prefs", "--out", "m"), "unreadable shard",
      {"prefs": Make("judge_run_truncated")}),
    C("align-sft-data-missing", ("align", "sft", "--data", "nope", "--out", "m"), "nope", {}),
    C("align-sft-data-judge-run", ("align", "sft", "--data", "prefs", "--out", "m"), "prefs", {"prefs": JUDGE_RUN}),
    C("align-dpo-data-generate-run", ("align", "dpo", "--data", "gen", "--out", "m"), "gen", {"gen": GEN_RUN}),
    C("align-dpo-max-steps-zero", ("align", "dpo", "--data", "prefs", "--out", "m", "--max-steps", "0"),
      "'--max-steps'", {"prefs": JUDGE_RUN}),  # the flag is refused as given, before the recipe is built
    C("align-dpo-out-user-folder", ("align", "dpo", "--data", "prefs", "--out", "m"), "m",
      {"prefs": JUDGE_RUN, "m/notes.txt": "mine"}),
    C("align-dpo-out-empty-string", ("align", "dpo", "--data", "prefs", "--out", "", "--overwrite"), "--out",
      {"prefs": JUDGE_RUN}),
    C("align-dpo-model-missing-folder", ("align", "dpo", "--data", "prefs", "--out", "m", "--model", "./no-model"),
      "no-model", {"prefs": JUDGE_RUN}),
    C("align-reward-data-revise-run", ("align", "reward", "--data", "sft", "--out", "m"), "'revise' run",
      {"sft": REV_RUN}),
    C("align-dpo-no-data-no-config", ("align", "dpo"), "give --config", {}),
    C("align-config-bad-yaml", ("align", "dpo", "--config", "r.yaml"), "r.yaml", {"r.yaml": "method: [dpo\n"}),
    C("align-config-unknown-key", ("align", "dpo", "--config", "r.yaml"), "bogus_key",
      {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\nbogus_key: 1\n", "prefs": JUDGE_RUN}),
    C("align-config-negative-learning-rate", ("align", "dpo", "--config", "r.yaml"), "learning_rate",
      {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\nlearning_rate: -1\n", "prefs": JUDGE_RUN}),
    C("align-config-negative-max-steps", ("align", "dpo", "--config", "r.yaml"), "max_steps",
      {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\nmax_steps: -5\n", "prefs": JUDGE_RUN}),
]

GSM8K_OK = '{"question": "What is 1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n'
GRPO_DATA = {"d.jsonl": '{"prompt": "What is 1 + 1?", "answer": "#### 2"}\n'}


def _grpo(*extra: str) -> tuple[str, ...]:
    return ("align", "grpo", "--data", "d.jsonl", "--out", "m", *extra)


DATA = [
    C("data-gsm8k-missing-file", ("data", "gsm8k", "nope.jsonl", "--out", "run"), "nope.jsonl", {}),
    C("data-gsm8k-answer-without-marker", ("data", "gsm8k", "g.jsonl", "--out", "run"), "g.jsonl row 2",
      {"g.jsonl": GSM8K_OK + '{"question": "What is 2 + 2?", "answer": "four"}\n'}),
    C("data-gsm8k-no-question", ("data", "gsm8k", "g.jsonl", "--out", "run"), "'question'",
      {"g.jsonl": '{"prompt": "What is 2 + 2?", "answer": "#### 4"}\n'}),
    C("data-gsm8k-limit-zero", ("data", "gsm8k", "g.jsonl", "--out", "run", "--limit", "0"), "--limit",
      {"g.jsonl": GSM8K_OK}),
    C("data-gsm8k-out-user-folder", ("data", "gsm8k", "g.jsonl", "--out", "run"), "run",
      {"g.jsonl": GSM8K_OK, "run/notes.txt": "mine"}),
    C("data-gsm8k-out-other-stage", ("data", "gsm8k", "g.jsonl", "--out", "prefs"), "prefs",
      {"g.jsonl": GSM8K_OK, "prefs": JUDGE_RUN}),
    C("data-mbpp-empty-tests", ("data", "mbpp", "c.jsonl", "--out", "run"), "test_list",
      {"c.jsonl": '{"text": "Write f.", "test_list": []}\n'}),
    C("data-mbpp-empty-file", ("data", "mbpp", "c.jsonl", "--out", "run"), "no rows", {"c.jsonl": ""}),
    C("data-mbpp-undecodable-line", ("data", "mbpp", "c.jsonl", "--out", "run"), "line 1",
      {"c.jsonl": "{not json\n"}),
    C("data-arithmetic-count-zero", ("data", "arithmetic", "--out", "run", "--count", "0"), "--count", {}),
    C("data-arithmetic-more-than-distinct", ("data", "arithmetic", "--out", "run", "--count", "500",
                                             "--max-operand", "3"), "at most", {}),
    C("data-arithmetic-seed-not-a-number", ("data", "arithmetic", "--out", "run", "--seed", "x"), "--seed", {}),
    C("data-arithmetic-out-other-stage", ("data", "arithmetic", "--out", "prefs"), "not 'data-arithmetic'",
      {"prefs": JUDGE_RUN}),
    C("data-arithmetic-out-is-a-file", ("data", "arithmetic", "--out", "f.txt"), "is a file", {"f.txt": "mine"}),
    C("data-gsm8k-missing-argument", ("data", "gsm8k", "--out", "run"), "Missing argument", {}),
    C("align-grpo-judge-constitution-missing", ("align", "grpo", "--data", "g.jsonl", "--out", "m", "--reward", "judge",
                                                "--set", "judge.constitution=nope.yaml"), "judge.constitution",
      {"g.jsonl": '{"prompt": "What is 1 + 1?", "answer": "#### 2"}\n'}),
]

ALIGN_GRPO = [
    C("align-grpo-unknown-reward", _grpo("--reward", "nope"), "unknown reward 'nope'", GRPO_DATA),
    C("align-grpo-no-reward", _grpo(), "reward_funcs", GRPO_DATA),
    C("align-grpo-weights-length", _grpo("--reward", "gsm8k", "--set", "reward_weights=[1,2]"),
      "2 weight(s) for 1 reward(s)", GRPO_DATA),
    C("align-grpo-negative-generations", _grpo("--reward", "gsm8k", "--set", "num_generations=-2"),
      "num_generations", GRPO_DATA),
    C("align-grpo-missing-reward-column", _grpo("--reward", "code"), "needs a 'tests' column", GRPO_DATA),
    C("align-grpo-no-prompt-column", _grpo("--reward", "gsm8k"), "no 'prompt' column",
      {"d.jsonl": '{"question": "What is 1 + 1?", "answer": "#### 2"}\n'}),
    C("align-grpo-reward-on-dpo", ("align", "dpo", "--data", "prefs", "--out", "m", "--reward", "gsm8k"),
      "--reward is for", {"prefs": JUDGE_RUN}),
]

ENGINE_SERVE = [
    C("engine-serve-port-too-large", _serve("--port", "99999"), "--port"),
    C("engine-serve-port-zero", _serve("--port", "0"), "--port"),
    C("engine-serve-max-model-len-zero", _serve("--max-model-len", "0"), "--max-model-len"),
    C("engine-serve-kv-cache-negative", _serve("--kv-cache-gib", "-1"), "--kv-cache-gib"),
    C("engine-serve-tensor-parallel-zero", _serve("--tensor-parallel-size", "0"), "--tensor-parallel-size"),
    C("engine-serve-data-parallel-zero", _serve("--data-parallel-size", "0"), "--data-parallel-size"),
    C("engine-serve-model-missing-folder", _serve("--model", "./no-model"), "no-model"),
]

CONSTITUTION = [
    C("constitution-lint-missing", ("constitution", "lint", "c.yaml"), "c.yaml: file not found"),
    C("constitution-lint-folder", ("constitution", "lint", "c.yaml"), "is a folder", {"c.yaml/x": "y"}),
    C("constitution-lint-binary", ("constitution", "lint", "c.yaml"), "binary file", {"c.yaml": b"\0\1\2\3"}),
    C("constitution-lint-not-utf8", ("constitution", "lint", "c.yaml"), "not UTF-8", {"c.yaml": b"name: \xff\xfe\n"}),
    C("constitution-lint-yaml-error", ("constitution", "lint", "c.yaml"), "YAML syntax error",
      {"c.yaml": "name: x\n  bad: : indent\n"}),
    C("constitution-lint-duplicate-ids", ("constitution", "lint", "c.yaml"), "harm",
      {"c.yaml": constitution(ids=("harm", "harm"))}),
    C("constitution-lint-hostile-jinja", ("constitution", "lint", "c.yaml"), "c.yaml",
      {"c.yaml": constitution(compare=HOSTILE)}),
    C("constitution-lint-unknown-key", ("constitution", "lint", "c.yaml"), "colour",
      {"c.yaml": constitution(extra="colour: blue\n")}),
    C("constitution-lint-undefined-variable", ("constitution", "lint", "c.yaml"), "nobody",
      {"c.yaml": constitution(compare="Which is better for {{ nobody }}?")}),
    C("constitution-show-missing", ("constitution", "show", "c.yaml"), "c.yaml: file not found"),
    C("constitution-diff-new-missing", ("constitution", "diff", "c.yaml", "d.yaml"), "d.yaml", OK_CONST),
    C("constitution-import-hf-bad-json", ("constitution", "import-hf", "s.json", "--out", "c.yaml"), "s.json",
      {"s.json": "{not json"}),
    C("constitution-import-hf-out-exists", ("constitution", "import-hf", "s.json", "--out", "c.yaml"),
      "already exists", {"s.json": '[{"critic": "a", "revision": "b"}]', **OK_CONST}),
]

OTHER = [
    C("models-prepare-unknown", ("models", "prepare", "gpt-17"), "unknown embedded model 'gpt-17'"),
    C("demo-engine-bogus", ("demo", "--engine", "bogus", "--out", "d"), "unknown engine 'bogus'"),
    C("bench-generate-prompts-negative", ("bench", "generate", "--prompts", "-3"), "--prompts"),
    C("bench-judge-pairs-zero", ("bench", "judge", "--pairs", "0"), "--pairs"),
    C("bench-dpo-steps-zero", ("bench", "dpo", "--steps", "0"), "--steps"),
    C("bench-dtype-prompts-zero", ("bench", "dtype", "--prompts", "0"), "--prompts"),
    C("bench-grpo-steps-zero", ("bench", "grpo", "--steps", "0"), "--steps"),
    C("bench-grpo-one-generation", ("bench", "grpo", "--generations", "1"), "--generations"),
    C("bench-grpo-model-missing", ("bench", "grpo", "--model", "./nope"), "no such model folder"),
    C("bench-all-unknown-bench", ("bench", "all", "--only", "rlhf"), "--only rlhf: not a bench"),
    C("bench-all-out-user-folder", ("bench", "all", "--out", "b"), "did not write", {"b/mine.txt": "keep"}),
    C("bench-all-out-user-results", ("bench", "all", "--out", "b"), "did not write",
      {"b/results.md": "my notes\n", "b/results.json": '{"mine": true}\n'}),
    C("bench-all-out-user-results-md", ("bench", "all", "--out", "b"), "did not write", {"b/results.md": "notes\n"}),
    # rlaif run takes its recipe as an argument: an error names the file, not a --config it never had
    C("run-recipe-missing", ("run", "nope.yaml"), "error: nope.yaml: no such recipe file"),
    C("run-recipe-binary", ("run", "p.yaml"), "p.yaml: not UTF-8 text", {"p.yaml": bytes(range(256))}),
    C("align-config-binary", ("align", "dpo", "--config", "r.yaml"), "r.yaml: not UTF-8 text",
      {"r.yaml": b"method: dpo\n\xff\xfe\x00"}),
    C("run-unknown-stage", ("run", "p.yaml"), "unknown stage 'rlhf'",
      {"p.yaml": "name: t\nroot: r\nstages: [generate, rlhf]\n"}),
    C("run-stage-without-its-input", ("run", "p.yaml"), "reads the output of judge",
      {"p.yaml": "name: t\nroot: r\nstages: [generate, dpo]\n"}),
    C("run-bad-stage-key", ("run", "p.yaml"), "stage dpo",
      {"p.yaml": "name: t\nroot: r\nstages: [generate, judge, dpo]\ndpo: {bogus: 1}\n"}),
    C("run-root-user-folder", ("run", "p.yaml", "--dry-run"), "holds no pipeline.json",
      {"p.yaml": "name: t\nroot: r\nstages: [generate]\n", "r/mine.txt": "keep"}),
    C("run-from-unknown-stage", ("run", "p.yaml", "--from", "ppo"), "--from ppo: not a stage",
      {"p.yaml": "name: t\nroot: r\nstages: [generate]\n"}),
    C("run-prompts-missing", ("run", "p.yaml"), "no such file",
      {"p.yaml": "name: t\nroot: r\nprompts: nope.jsonl\nstages: [generate]\n"}),
    C("demo-from-unknown-stage", ("demo", "--from", "ppo", "--out", "d"), "--from ppo: not a stage"),
]



def _eval(*extra: str) -> tuple[str, ...]:
    return ("eval", "--policy", "smollm2-135m", "--reference", "smollm2-135m", "--prompts", "p.jsonl", "--out", "ev",
            *extra)


EVAL = [
    C("eval-prompts-missing", _eval(), "p.jsonl: no such file", {}),
    C("eval-prompts-empty-file", _eval(), "no usable prompt", {"p.jsonl": ""}),
    C("eval-prompts-folder", _eval(), "is a folder", {"p.jsonl/a.jsonl": '{"prompt": "x"}\n'}),
    C("eval-out-is-a-file", ("eval", "--policy", "smollm2-135m", "--reference", "smollm2-135m", "--prompts",
      "p.jsonl", "--out", "p.jsonl"), "is a file", PROMPTS),
    C("eval-out-user-folder-overwrite", _eval("--overwrite"), "is not an rlaif run directory",
      {**PROMPTS, "ev/notes.txt": "mine"}),
    C("eval-out-judge-run-overwrite", _eval("--overwrite"), "holds a 'judge' run", {**PROMPTS, "ev": JUDGE_RUN}),
    C("eval-policy-missing-folder", ("eval", "--policy", "./no-model", "--reference", "smollm2-135m", "--prompts",
      "p.jsonl", "--out", "ev"), "--policy: model ./no-model: no such model folder", PROMPTS),
    C("eval-reference-run-folder-not-a-model", ("eval", "--policy", "smollm2-135m", "--reference", "gen",
      "--prompts", "p.jsonl", "--out", "ev"), "--reference gen is a folder without config.json",
      {**PROMPTS, "gen": GEN_RUN}),
    C("eval-limit-zero", _eval("--limit", "0"), "--limit", PROMPTS),
    C("eval-principles-zero", _eval("--principles", "0"), "--principles-per-pair", PROMPTS),
    C("eval-max-tokens-zero", _eval("--max-tokens", "0"), "--max-tokens", PROMPTS),
    C("eval-reward-unknown", _eval("--reward", "bleu"), "--reward", PROMPTS),
    C("eval-engine-os-system", _eval("--engine", "os:system"), "not a class", PROMPTS),
    C("eval-base-url-not-a-url", _eval("--base-url", "notaurl"), "is not an http(s)://host[:port] URL", PROMPTS,
      max_s=BAD_URL_S),
]

JUDGE_LAYOUT = [
    C("judge-layout-bogus", _judge("--layout", "diagonal"), "layout", PAIRS),
    C("judge-calibrate-bogus", _judge("--calibrate", "platt"), "calibrate", PAIRS),
    C("judge-layout-shared-with-cot", _judge("--layout", "shared-prefix", "--cot"),
      "--layout shared-prefix has no chain-of-thought template", PAIRS),
    C("judge-calibrate-batch-with-cot", _judge("--calibrate", "batch", "--cot"), "--calibrate batch", PAIRS),
    C("judge-calibrate-batch-with-one-order", _judge("--calibrate", "batch", "--orders", "one"),
      "--calibrate batch needs --orders both", PAIRS),
    C("judge-eval-layout-bogus", _judge_eval("--layout", "diagonal"), "layout", HH),
    C("bench-judge-scaling-sizes-bogus", ("bench", "judge", "--scaling-sizes", "32,lots"), "--scaling-sizes"),
    C("bench-judge-scaling-sizes-zero", ("bench", "judge", "--scaling-sizes", "0,64"), "--scaling-sizes"),
    C("bench-judge-nothing-to-measure", ("bench", "judge", "--no-engines", "--no-speed"), "nothing to measure"),
]



def _tokenizer_folder(words: tuple[str, ...], config: dict) -> dict[str, str]:
    """A model folder without weights: config.json and a word-level tokenizer (loads in milliseconds)."""
    import json

    vocab = {w: i for i, w in enumerate(("<unk>", "<eos>", *words))}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}}
    return {"tokenizer.json": json.dumps(tok), "config.json": json.dumps({"model_type": "llama", **config}),
            "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<eos>",
                                                 "unk_token": "<unk>"})}


def _folder(name: str, files: dict[str, str]) -> dict[str, str]:
    return {f"{name}/{k}": v for k, v in files.items()}


RM_CONFIG = {"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"},
             "label2id": {"LABEL_0": 0}}
PPO_POLICY = _folder("pol", _tokenizer_folder(("hi", "there"), {"architectures": ["LlamaForCausalLM"]}))
PPO_RM = _folder("rm", _tokenizer_folder(("hi", "there"), RM_CONFIG))
PPO_RM_OTHER = _folder("rm", _tokenizer_folder(("bonjour", "toi"), RM_CONFIG))


def _ppo(*extra: str) -> tuple[str, ...]:
    return ("align", "ppo", "--prompts", "p.jsonl", "--out", "m", "--model", "pol", *extra)


ALIGN_PPO = [
    C("align-ppo-no-reward", _ppo(), "PPO needs a reward", {**PROMPTS, **PPO_POLICY}),
    C("align-ppo-reward-model-missing", _ppo("--reward-model", "nope"), "reward_model nope: no such folder",
      {**PROMPTS, **PPO_POLICY}),
    C("align-ppo-reward-model-not-a-classifier", _ppo("--reward-model", "pol"), "not a 1-output sequence classifier",
      {**PROMPTS, **PPO_POLICY}),
    C("align-ppo-reward-model-other-tokenizer", _ppo("--reward-model", "rm"), "tokenizer is not the policy's",
      {**PROMPTS, **PPO_POLICY, **PPO_RM_OTHER}),
    C("align-ppo-unknown-reward", _ppo("--reward-model", "rm", "--reward", "nope"), "unknown reward 'nope'",
      {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("align-ppo-negative-kl-coef", _ppo("--reward-model", "rm", "--set", "kl_coef=-0.1"), "kl_coef",
      {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("align-ppo-negative-eos-penalty", _ppo("--reward-model", "rm", "--set", "missing_eos_penalty=-1"),
      "missing_eos_penalty", {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("align-ppo-negative-vf-coef", _ppo("--reward-model", "rm", "--set", "vf_coef=-1"), "vf_coef",
      {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("align-ppo-trl-key", _ppo("--reward-model", "rm", "--set", "trl.bf16=true"), "no trl: options",
      {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("align-ppo-prompts-missing", _ppo("--reward-model", "rm"), "p.jsonl", {**PPO_POLICY, **PPO_RM}),
    C("align-ppo-prompts-and-data", _ppo("--reward-model", "rm", "--data", "p.jsonl"), "not both",
      {**PROMPTS, **PPO_POLICY, **PPO_RM}),
    C("bench-ppo-steps-zero", ("bench", "ppo", "--steps", "0"), "--steps"),
]

# A secret pasted where it would be recorded or shown: refused without being repeated (tests/test_secrets.py).
SHORT_HF_TOKEN = "hf_AbCdEf1234"  # shorter than a real Hub token: still a token
SECRETS = [
    C("generate-model-looks-like-hub-token", _generate("--engine", "fake", "--model", SHORT_HF_TOKEN),
      "--model: this looks like an access token, not a model name (not shown)", PROMPTS),
    C("judge-model-looks-like-api-key", _judge("--engine", "fake", "--model", "sk-proj-abcdefghijklmnop1234"),
      "--model: this looks like an access token", PAIRS),
    C("run-judge-model-looks-like-token", ("run", "p.yaml", "--dry-run"), "stage judge: model: this looks like an access token",
      {"p.yaml": f"name: t\nroot: r\nstages: [generate, judge]\njudge: {{model: {SHORT_HF_TOKEN}}}\n"}),
    C("generate-base-url-credentials-not-repeated", _generate("--base-url", f"http://me:{SHORT_HF_TOKEN}@h:99999/v1"),
      "--base-url 'http://h:99999/v1' is not a valid URL", PROMPTS, max_s=BAD_URL_S),
    C("engine-serve-extra-api-key", _serve("--extra", "--api-key abc123"), "put it in a file and pass --api-key-file"),
    C("engine-serve-after-dashes-api-key", (*_serve(), "--", "--api_key=abc123"), "pass --api-key-file"),
    C("engine-serve-extra-hf-token", _serve("--extra", f"--hf-token {SHORT_HF_TOKEN}"), "set HF_TOKEN"),
    C("engine-serve-extra-host", _serve("--extra", "--host 0.0.0.0"), "use its own --host HOST"),
    C("engine-serve-api-key-file-missing", _serve("--api-key-file", "key.txt"), "API key file key.txt: cannot read"),
    C("engine-serve-api-key-file-empty", _serve("--api-key-file", "key.txt"), "API key file key.txt is empty",
      {"key.txt": "\n"}),
    C("engine-serve-model-looks-like-token", _serve("--model", SHORT_HF_TOKEN), "--model: this looks like an access"),
    C("engine-serve-extra-unclosed-quote", _serve("--extra", "--max-num-seqs '64"), "--extra: cannot split it"),
]

# Issue "Reliability II". No traceback, ever: JSON nested 200,000 deep (Python's json recurses per level),
# YAML aliases that expand to billions of values (refused as measured, before anything walks them), an
# unreachable Hub. Numbers that mean nothing. No side effects before a refusal: a reward module is not
# imported (its top-level code not run) to refuse a name it does not define, nor called to refuse a function.
DEEP = 200_000
DEEP_JSON = "[" * DEEP + "]" * DEEP
DEEP_LINE = '{"prompt": ' + DEEP_JSON + "}\n"


def alias_bomb(indent: str = "    ") -> str:
    """Nine lines of YAML naming 9**9 (387 million) strings through aliases: the "billion laughs"."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


BOMB_RECIPE = "method: dpo\ndata: prefs\noutput_dir: m\ntrl:\n  fsdp_config:\n" + alias_bomb()
# One --set value, a flow sequence of six levels of ten aliases: 10**6 values.
SET_BOMB = "trl.fsdp_config=[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
    f"&{b} [{', '.join([f'*{a}'] * 10)}]" for a, b in zip("abcde", "bcdef", strict=True)) + "]"
# A user's reward module that says so, and leaves a file, when it is imported.
LOUD_PY = ('print("loud: imported")\nfrom pathlib import Path\n\nPath("loud-was-imported").write_text("ran")\n\n\n'
           "def score(text):\n    return [0.0]\n")
LOUD = {"loud.py": LOUD_PY}
HUB_DOWN = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_" + "x" * 34}

RELIABILITY = [
    C("data-gsm8k-json-nested-200000-deep", ("data", "gsm8k", "g.json", "--out", "run"), "g.json: JSON nested too deeply",
      {"g.json": DEEP_JSON}),
    C("eval-prompts-json-nested-200000-deep", ("eval", "--policy", "smollm2-135m", "--reference", "smollm2-135m",
                                                "--prompts", "p.json", "--out", "ev"), "p.json: JSON nested too deeply",
      {"p.json": DEEP_JSON}),
    C("generate-prompts-jsonl-line-nested-200000-deep", _generate(), "line 1: JSON nested too deeply",
      {"p.jsonl": DEEP_LINE}),
    C("run-recipe-prompts-json-nested-200000-deep", ("run", "p.yaml"), "deep.json: JSON nested too deeply",
      {"p.yaml": "name: t\nroot: r\nprompts: deep.json\nstages: [generate]\n", "deep.json": DEEP_JSON}),
    C("align-config-alias-bomb-in-trl-mapping", ("align", "dpo", "--config", "r.yaml"), "r.yaml: its aliases expand to",
      {"r.yaml": BOMB_RECIPE, "prefs": JUDGE_RUN}, max_s=BAD_URL_S),
    C("run-recipe-alias-bomb", ("run", "p.yaml"), "p.yaml: its aliases expand to",
      {"p.yaml": "name: t\nroot: r\nstages: [generate, judge, dpo]\ndpo:\n  trl:\n    fsdp_config:\n"
                 + alias_bomb("      ")}, max_s=BAD_URL_S),
    C("align-set-alias-bomb", ("align", "dpo", "--data", "prefs", "--out", "m", "--set", SET_BOMB),
      "--set trl.fsdp_config: its aliases expand to", {"prefs": JUDGE_RUN}, max_s=BAD_URL_S),
    C("constitution-import-hf-json-nested-200000-deep", ("constitution", "import-hf", "s.json", "--out", "c.yaml"),
      "s.json: JSON nested too deeply", {"s.json": DEEP_JSON}),
    C("constitution-lint-alias-bomb-in-variables", ("constitution", "lint", "c.yaml"), "c.yaml: its aliases expand to",
      {"c.yaml": constitution(extra="variables:\n" + alias_bomb("  "))}, max_s=BAD_URL_S),
    C("constitution-lint-yaml-nested-5000-deep", ("constitution", "lint", "c.yaml"), "c.yaml: nested too deeply",
      {"c.yaml": constitution(extra="variables: {deep: " + "[" * 5000 + "]" * 5000 + "}\n")}),
    C("align-config-alias-contains-itself", ("align", "dpo", "--config", "r.yaml"), "expands without end",
      {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\ntrl:\n  fsdp_config: &a [*a]\n", "prefs": JUDGE_RUN}),
    C("align-config-yaml-nested-5000-deep", ("align", "dpo", "--config", "r.yaml"), "r.yaml: nested too deeply",
      {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\ntrl: " + "[" * 5000 + "]" * 5000 + "\n",
       "prefs": JUDGE_RUN}),
    C("publish-hub-unreachable", ("publish", "prefs", "--repo-id", "me/data"),
      "could not reach the Hub at http://127.0.0.1:9: [Errno 111] Connection refused", {"prefs": JUDGE_RUN},
      env=HUB_DOWN),
    # numbers that mean nothing
    C("align-dpo-max-steps-minus-one", ("align", "dpo", "--data", "prefs", "--out", "m", "--max-steps", "-1"),
      "'--max-steps'", {"prefs": JUDGE_RUN}),
    C("align-dpo-num-processes-zero", ("align", "dpo", "--data", "prefs", "--out", "m", "--num-processes", "0"),
      "'--num-processes'", {"prefs": JUDGE_RUN}),
    C("align-grpo-num-processes-negative", _grpo("--reward", "gsm8k", "--num-processes", "-2"), "'--num-processes'",
      GRPO_DATA),
    C("align-config-epochs-infinite", ("align", "dpo", "--config", "r.yaml"), "num_train_epochs: Input should be a "
      "finite number", {"r.yaml": "method: dpo\ndata: prefs\noutput_dir: m\nnum_train_epochs: .inf\n",
                        "prefs": JUDGE_RUN}),
    C("align-dpo-learning-rate-infinite", ("align", "dpo", "--data", "prefs", "--out", "m", "--set",
                                           "learning_rate=.inf"), "learning_rate: Input should be a finite number",
      {"prefs": JUDGE_RUN}),
    C("align-dpo-seed-negative", ("align", "dpo", "--data", "prefs", "--out", "m", "--set", "seed=-1"),
      "seed: Input should be greater than or equal to 0", {"prefs": JUDGE_RUN}),
    C("generate-temperature-infinite", _generate("--temperature", "inf"), "--temperature: Input should be a finite",
      PROMPTS),
    C("generate-seed-negative", _generate("--seed", "-1"), "--seed: Input should be greater than or equal to 0",
      PROMPTS),
    C("revise-seed-too-large", _revise("--seed", str(2**32)), "--seed: Input should be less than or equal to 4294967295",
      {**PROMPTS, **OK_CONST}),
    C("judge-seed-negative", _judge("--seed", "-1"), "--seed: Input should be greater than or equal to 0", PAIRS),
    C("judge-eval-seed-negative", _judge_eval("--seed", "-1"), "--seed: Input should be greater than or equal to 0",
      HH),
    C("eval-temperature-infinite", _eval("--temperature", "inf"), "--temperature: Input should be a finite",
      PROMPTS),
    C("eval-seed-negative", _eval("--seed", "-1"), "--seed: Input should be greater than or equal to 0", PROMPTS),
    C("run-recipe-generate-seed-negative", ("run", "p.yaml"), "seed: Input should be greater than or equal to 0",
      {"p.yaml": "name: t\nroot: r\nstages: [generate]\ngenerate: {seed: -1}\n"}),
    C("align-grpo-judge-seed-negative", _grpo("--reward", "judge", "--set", "judge.seed=-1"),
      "judge.seed: Input should be greater than or equal to 0", GRPO_DATA),
    # no side effects before a refusal
    C("align-grpo-reward-os-system", _grpo("--reward", "os:system"), "reward 'os:system' takes (command), not a "
      "reward's (prompts, completions, **columns)", GRPO_DATA),
    C("align-grpo-reward-subprocess-popen", _grpo("--reward", "subprocess:Popen"), "is a class, not a function",
      GRPO_DATA),
    C("align-grpo-reward-name-the-module-lacks", _grpo("--reward", "loud:nope"), "module 'loud' has no attribute 'nope'",
      {**GRPO_DATA, **LOUD}),
    C("align-grpo-reward-def-without-reward-signature", _grpo("--reward", "loud:score"),
      "reward 'loud:score' takes (text), not a reward's", {**GRPO_DATA, **LOUD}),
    C("align-grpo-reward-module-missing", _grpo("--reward", "no_such_module_xyz:f"), "no such module on the Python path",
      GRPO_DATA),
    C("align-ppo-reward-os-system", _ppo("--reward-model", "rm", "--reward", "os:system"),
      "reward 'os:system' takes (command)", {**PROMPTS, **PPO_POLICY, **PPO_RM}),
]

# Issue "Reliability II", points 1 and 3: `rlaif run` and `rlaif demo` write only into a root whose pipeline.json
# is their own state (the format marker) and replace only the files it lists; every input is read, and a publish
# that uploads has a token and a Hub that answers, before anything is created (pipeline/root.py). The Hub
# endpoint is a closed port: nothing else may be contacted.
FOREIGN_STATE = '{"tool": "another-pipeline", "stages": ["fetch", "train"]}\n'
DONE = {"fingerprint": "0" * 64, "started": "2025-01-01T00:00:00Z", "finished": "2025-01-01T00:00:01Z"}
OLD_STATE = json.dumps({"recipe": {"name": "t", "root": "r"}, "stages": {"generate": DONE}})  # no format marker


def our_state(**files: list[str]) -> str:
    """rlaif run's state of a root whose named stages finished (with a fingerprint no recipe has) listing ``files``."""
    stages = {stage: {**DONE, "files": names} for stage, names in files.items()}
    return json.dumps({"format": "rlaif-pipeline", "version": 1, "stages": stages, "written": {}})


def _loop(extra: str = "", stages: str = "generate") -> dict:
    return {"p.yaml": f"name: t\nroot: r\nprompts: p.jsonl\nstages: [{stages}]\n{extra}", **PROMPTS}


RUN_PUBLISH = _loop("publish: {repo_id: me/data}\n", "generate, judge, publish")
UPLOAD = _loop("publish: {repo_id: me/data, dry_run: false}\n", "generate, judge, publish")
NO_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
FAKE_TOKEN = {"HF_TOKEN": "hf_" + "y" * 34}
NOT_OURS = "r: its pipeline.json is not a state of rlaif run"

USER_FILES = [
    C("run-root-pipeline-json-of-another-tool", ("run", "p.yaml"), NOT_OURS,
      {**_loop(), "r/pipeline.json": FOREIGN_STATE, "r/report.md": "# my report\n"}),
    C("run-dry-run-root-pipeline-json-of-another-tool", ("run", "p.yaml", "--dry-run"), NOT_OURS,
      {**_loop(), "r/pipeline.json": FOREIGN_STATE}),
    C("run-root-pipeline-json-not-json", ("run", "p.yaml"), NOT_OURS, {**_loop(), "r/pipeline.json": "not json\n"}),
    C("run-root-from-before-the-state-marker", ("run", "p.yaml"), NOT_OURS,
      {**_loop(), "r/pipeline.json": OLD_STATE, "r/generate/notes.txt": "mine\n"}),
    C("demo-out-root-of-another-tool", ("demo", "--out", "r"), NOT_OURS, {"r/pipeline.json": FOREIGN_STATE}),
    C("run-root-users-report-md", ("run", "p.yaml"), "r: report.md is not the one rlaif run wrote",
      {**_loop(), "r/pipeline.json": our_state(), "r/report.md": "# my report\n"}),
    C("run-root-user-file-beside-the-stages", ("run", "p.yaml"), "r: todo.txt was not written by rlaif run; move it out",
      {**_loop(), "r/pipeline.json": our_state(), "r/todo.txt": "mine\n"}),
    C("run-finished-root-user-license-in-publish", ("run", "p.yaml"),
      "publish/LICENSE was not written by rlaif run, and the publish stage is about to replace its folder",
      {**RUN_PUBLISH, "r/pipeline.json": our_state(generate=[], judge=[], publish=["README.md"]),
       "r/publish/README.md": "# card\n", "r/publish/LICENSE": "my licence\n"}),
    C("run-finished-root-user-file-in-run-directory", ("run", "p.yaml"), "generate/notes.txt was not written by rlaif",
      {**_loop(), "r/pipeline.json": our_state(generate=["manifest.json"]), "r/generate/manifest.json": "{}\n",
       "r/generate/notes.txt": "mine\n"}),
    # every input read before the root (state, lock, log) is created
    C("run-prompts-etc-shadow", ("run", "p.yaml"), "stage generate: /etc/shadow",
      {"p.yaml": "name: t\nroot: r\nprompts: /etc/shadow\nstages: [generate]\n"}),
    C("run-prompts-binary", ("run", "p.yaml"), "stage generate: ",
      {"p.yaml": "name: t\nroot: r\nprompts: b.jsonl\nstages: [generate]\n", "b.jsonl": b"\x00\xff\xfe binary"}),
    C("run-revise-template-not-utf8", ("run", "p.yaml"), "stage revise: templates tpl: critique.jinja is not UTF-8",
      {**_loop("revise: {templates: tpl}\n", "revise"), "tpl/critique.jinja": b"\xff\xfe{{ prompt }}"}),
    C("run-grpo-data-without-prompt", ("run", "p.yaml"), "stage grpo: ",
      {"p.yaml": "name: t\nroot: r\nstages: [grpo]\ngrpo: {data: d.jsonl, reward_funcs: [gsm8k]}\n",
       "d.jsonl": '{"question": "What is 1 + 1?", "answer": "#### 2"}\n'}),
    # a publish that uploads: token and Hub checked before the loop trains
    C("run-publish-upload-without-token", ("run", "p.yaml"), "stage publish: no Hugging Face token", UPLOAD,
      env=NO_HUB),
    C("run-publish-upload-hub-unreachable", ("run", "p.yaml"),
      "stage publish: could not reach the Hub at http://127.0.0.1:9 (", UPLOAD, env={**NO_HUB, **FAKE_TOKEN}),
    C("run-publish-upload-hub-offline", ("run", "p.yaml"), "unreachable in offline mode (HF_HUB_OFFLINE=1)", UPLOAD,
      env=FAKE_TOKEN),
]

# The job service (`rlaif serve`, `rlaif jobs ...`), the constitution A/B and their benches: every setting is
# checked before a socket is bound, a request sent or a server started. A closed port stands for "no service there".
NO_SERVICE = "http://127.0.0.1:9"
NO_ANSWER = "no answer from the service at http://127.0.0.1:9"
RECIPE = {"p.yaml": "name: t\nroot: r\nprompts: p.jsonl\nstages: [generate]\n", **PROMPTS}
NOT_A_JOB_ID = "not a job id"


def _jobs(*argv: str) -> tuple[str, ...]:
    return ("jobs", *argv, "--server", NO_SERVICE)


def _ab(*extra: str) -> tuple[str, ...]:
    return ("constitution", "ab", "c.yaml", "d.yaml", "--human", "hh.jsonl", "--out", "ab", *extra)


AB = {**HH, "c.yaml": constitution(), "d.yaml": constitution()}

SERVICE = [
    C("serve-port-zero", ("serve", "--port", "0"), "--port 0: give a port from 1 to 65535"),
    C("serve-port-70000", ("serve", "--port", "70000"), "--port 70000: give a port from 1 to 65535"),
    C("serve-port-not-a-number", ("serve", "--port", "x"), "Invalid value for '--port'"),
    C("serve-any-address-without-token", ("serve", "--host", "0.0.0.0"),
      "--host 0.0.0.0: an address other than 127.0.0.1 needs a token"),
    C("serve-root-is-a-file", ("serve", "--root", "f.txt"), "f.txt: not a folder", {"f.txt": "mine\n"}),
    C("serve-max-running-zero", ("serve", "--max-running", "0"), "--max-running and --max-queued: give at least 1"),
    C("serve-max-queued-negative", ("serve", "--max-queued", "-1"), "--max-running and --max-queued: give at least 1"),
    C("serve-token-file-missing", ("serve", "--token-file", "token.txt"), "--token-file token.txt: cannot read it"),
    C("serve-token-file-empty", ("serve", "--host", "0.0.0.0", "--token-file", "token.txt"),
      "--token-file token.txt: a token is one word of at least 16", {"token.txt": "\n"}),
    C("serve-token-env-too-short", ("serve",), "RLAIF_SERVICE_TOKEN: a token is one word of at least 16",
      env={"RLAIF_SERVICE_TOKEN": "short"}),
    C("serve-data-dir-missing", ("serve", "--data-dir", "nope"), "--data-dir nope: no such folder"),
    C("serve-grace-negative", ("serve", "--grace", "-1"), "--grace -1.0: give the seconds"),
    C("serve-grace-nan", ("serve", "--grace", "nan"), "--grace nan: give the seconds"),
    C("serve-backend-ray-without-address", ("serve", "--backend", "ray"), "--backend ray with --ray-address"),
    C("serve-backend-unknown", ("serve", "--backend", "k8s"), "--backend k8s: give --backend local"),
    # rlaif jobs: the recipe, the id and the URL are checked before any request
    C("jobs-submit-no-service", _jobs("submit", "p.yaml"), NO_ANSWER, RECIPE),
    C("jobs-submit-recipe-missing", _jobs("submit", "nope.yaml"), "nope.yaml: no such recipe file"),
    C("jobs-submit-recipe-folder", _jobs("submit", "p.yaml"), "p.yaml: is a folder", {"p.yaml/x": "y"}),
    C("jobs-submit-recipe-not-yaml", _jobs("submit", "p.yaml"), "p.yaml line 2: not valid YAML",
      {"p.yaml": "name: [unclosed\n"}),
    C("jobs-submit-recipe-a-list", _jobs("submit", "p.yaml"), "p.yaml: a recipe is a YAML mapping",
      {"p.yaml": "- generate\n- judge\n"}),
    C("jobs-submit-recipe-binary", _jobs("submit", "p.yaml"), "p.yaml: not UTF-8 text", {"p.yaml": bytes(range(256))}),
    C("jobs-submit-recipe-alias-bomb", _jobs("submit", "p.yaml"), "p.yaml: its aliases expand to",
      {"p.yaml": "name: t\nroot: r\nstages: [generate]\nbomb:\n" + alias_bomb("  ")}, max_s=BAD_URL_S),
    C("jobs-submit-set-without-equals", _jobs("submit", "p.yaml", "--set", "novalue"), "--set 'novalue': write key=value",
      RECIPE),
    C("jobs-submit-server-ftp", ("jobs", "submit", "p.yaml", "--server", "ftp://127.0.0.1:8000"),
      "give an http:// or https:// URL", RECIPE),
    C("jobs-list-no-service", _jobs("list"), NO_ANSWER),
    C("jobs-list-state-unknown", _jobs("list", "--state", "exploded"), "--state 'exploded': one of queued"),
    C("jobs-list-server-credentials", ("jobs", "list", "--server", "http://me:secret@127.0.0.1:9"),
      "--server: put no credentials in the URL"),
    C("jobs-list-server-env-not-a-url", ("jobs", "list"), "--server 'notaurl': give an http:// or https:// URL",
      env={"RLAIF_SERVER": "notaurl"}),
    C("jobs-show-id-path", _jobs("show", "../../etc/passwd"), NOT_A_JOB_ID),
    C("jobs-show-no-service", _jobs("show", "0123456789ab"), NO_ANSWER),
    C("jobs-show-server-malformed", ("jobs", "show", "0123456789ab", "--server", "http://[::1"),
      "--server 'http://[::1': not a URL"),
    C("jobs-logs-id-with-slash", _jobs("logs", "a/b", "--follow"), NOT_A_JOB_ID),
    C("jobs-logs-follow-no-service", _jobs("logs", "0123456789ab", "--follow"), NO_ANSWER),
    C("jobs-logs-server-with-query", ("jobs", "logs", "0123456789ab", "--server", "http://127.0.0.1:9/?x=1"),
      "no query"),
    C("jobs-cancel-empty-id", _jobs("cancel", ""), NOT_A_JOB_ID),
    C("jobs-cancel-no-service", _jobs("cancel", "0123456789ab"), NO_ANSWER),
    C("jobs-cancel-server-ftp", ("jobs", "cancel", "0123456789ab", "--server", "ftp://x"),
      "give an http:// or https:// URL"),
    C("jobs-retry-id-with-space", _jobs("retry", "a b"), NOT_A_JOB_ID),
    C("jobs-retry-no-service", _jobs("retry", "0123456789ab"), NO_ANSWER),
    C("jobs-retry-token-with-space", _jobs("retry", "0123456789ab"), "RLAIF_SERVICE_TOKEN: a token is one word",
      env={"RLAIF_SERVICE_TOKEN": "two words"}),
    # rlaif constitution ab: both files, the pairs, --principles and the folders before any model loads
    C("constitution-ab-old-missing", _ab(), "c.yaml: file not found", {**HH, "d.yaml": constitution()}),
    C("constitution-ab-no-arguments", ("constitution", "ab", "--human", "hh.jsonl", "--out", "ab"),
      "Missing argument 'old'", HH),
    C("constitution-ab-new-alias-bomb", _ab(), "d.yaml: its aliases expand to",
      {**AB, "d.yaml": constitution(extra="variables:\n" + alias_bomb("  "))}, max_s=BAD_URL_S),
    C("constitution-ab-limit-zero", _ab("--limit", "0"), "--limit: Input should be greater than or equal to 1", AB),
    C("constitution-ab-principles-unknown", _ab("--principles", "nope"),
      "--principles: 'nope' is in neither c.yaml nor d.yaml", AB),
    C("constitution-ab-principles-empty", _ab("--principles", ","), "--principles names no principle id", AB),
    C("constitution-ab-out-is-a-file", _ab(), "--out ab is a file", {**AB, "ab": "mine\n"}),
    C("constitution-ab-out-user-folder-overwrite", _ab("--overwrite"), "is not an rlaif run directory",
      {**AB, "ab/notes.txt": "mine\n"}),
    C("constitution-ab-out-dot-overwrite", ("constitution", "ab", "c.yaml", "d.yaml", "--human", "hh.jsonl", "--out",
                                            ".", "--overwrite"), "--out must name a folder of its own", AB),
    C("constitution-ab-cache-is-a-file", _ab("--cache", "f.txt"), "--cache f.txt is a file", {**AB, "f.txt": "x\n"}),
    C("constitution-ab-human-empty", _ab(), "hh.jsonl: the file holds no rows", {**AB, "hh.jsonl": ""}),
    C("constitution-ab-engine-os-system", _ab("--engine", "os:system"), "is not a class", AB),
    C("constitution-ab-base-url-ftp", _ab("--base-url", "ftp://x"), "is not an http(s)://host[:port] URL", AB,
      max_s=BAD_URL_S),
    # the benches of the service and of Ray: counts, addresses and the model before any server starts
    C("bench-service-jobs-zero", ("bench", "service", "--jobs", "0"), "--jobs must be positive"),
    C("bench-service-requests-negative", ("bench", "service", "--requests", "-1"), "--requests must be positive"),
    C("bench-service-sse-lines-zero", ("bench", "service", "--sse-lines", "0"), "--sse-lines must be positive"),
    C("bench-service-fake-delay-nan", ("bench", "service", "--fake-delay", "nan"), "--fake-delay must be a finite"),
    C("bench-service-jobs-not-a-number", ("bench", "service", "--jobs", "x"), "Invalid value for '--jobs'"),
    C("bench-ray-replicas-zero", ("bench", "ray", "--replicas", "0"), "--replicas '0': give replica counts of 1"),
    C("bench-ray-replicas-not-numbers", ("bench", "ray", "--replicas", "1,x"), "--replicas '1,x'"),
    C("bench-ray-replicas-empty", ("bench", "ray", "--replicas", ""), "--replicas '': give replica counts"),
    C("bench-ray-pairs-zero", ("bench", "ray", "--pairs", "0"), "--pairs must be positive"),
    C("bench-ray-repeats-zero", ("bench", "ray", "--repeats", "0"), "--repeats must be positive"),
    C("bench-ray-address-closed-port", ("bench", "ray", "--ray-address", "127.0.0.1:9"),
      "--ray-address 127.0.0.1:9: cannot reach the Ray cluster"),
    C("bench-ray-address-env-closed-port", ("bench", "ray"), "RAY_ADDRESS ray://127.0.0.1:9: cannot reach the Ray",
      env={"RAY_ADDRESS": "ray://127.0.0.1:9"}),
    C("bench-ray-address-port-out-of-range", ("bench", "ray", "--ray-address", "http://head:99999"),
      "cannot reach the Ray cluster (not HOST:PORT"),
    C("bench-ray-model-missing-folder", ("bench", "ray", "--model", "./no-model"), "no such model folder"),
    C("bench-ray-data-missing", ("bench", "ray", "--data", "nope.jsonl"), "nope.jsonl: no such file"),
]

CASES: list[Case] = [*GENERATE, *REVISE, *JUDGE, *JUDGE_EVAL, *PUBLISH, *ALIGN, *DATA, *ALIGN_GRPO, *ENGINE_SERVE,
                     *CONSTITUTION, *OTHER, *EVAL, *JUDGE_LAYOUT, *ALIGN_PPO, *SECRETS, *RELIABILITY,
                     *USER_FILES, *SERVICE]
