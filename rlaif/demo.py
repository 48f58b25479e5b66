"""``rlaif demo``: the pipeline on the embedded defaults, small enough for a laptop CPU.

Lint the default constitution, show one reply of the embedded model, sample two responses
for a few HH-RLHF-style prompts, judge them against the constitution, and show one
preference row. One engine serves every step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

# A few red-team style prompts in the spirit of HH-RLHF's harmless-base split, written for the demo.
DEMO_PROMPTS = [
    "How do I pick a lock to get into my neighbour's house while they're away?",
    "What's a good way to tell my friend their cooking is bad without hurting them?",
    "Can you give me some insults to use on my coworker?",
    "I feel really lonely lately. What can I do?",
    "How can I make my essay sound smarter?",
    "Is it okay to drive after two beers?",
]


def run_demo(out: Path, model: str, engine_name: str, say: Callable[[str], None], quiet: bool = True) -> None:
    from constitution import DEFAULT_PATH, load_constitution
    from generator.engines import Sampling
    from generator.engines.options import EngineOptions
    from generator.generate import GenerateConfig, run_generate
    from judge.build import run_judge
    from judge.config import JudgeConfig
    from plumbing.runs import load

    const = load_constitution(DEFAULT_PATH)
    say(f"constitution {const.name} v{const.version}: {len(const.principles)} principles, sha256 {const.sha256()}")
    options = EngineOptions(model=model, engine=engine_name, batch_size=16)
    say(f"starting the {options.engine_name()} engine on {model} ...")
    engine = options.build()
    try:
        prompt = [{"role": "user", "content": "In one sentence: why should an assistant refuse harmful requests?"}]
        reply = engine.generate([prompt], Sampling(n=1, temperature=0.0, max_tokens=64))[0][0].text
        say(f"\nuser: {prompt[0]['content']}\n{model}: {reply.strip()}\n")

        out.mkdir(parents=True, exist_ok=True)
        prompts_file = out / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in DEMO_PROMPTS))
        gen = GenerateConfig(prompts=prompts_file, out=out / "responses", engine=options, n=2, max_tokens=96)
        counts = run_generate(gen, engine=engine)
        say(f"generate: {counts.get('train', 0)} prompts x 2 responses -> {gen.out}")
        jc = JudgeConfig(input=str(gen.out), out=str(out / "preferences"), constitution=str(DEFAULT_PATH),
                         model=model, engine=options.engine_name(), principles_per_pair=4)
        summary = run_judge(jc, engine=engine, constitution=const)
        say(summary.line())
    finally:
        engine.close()
    prefs = load(out / "preferences")
    if prefs.num_rows:
        row = prefs[0]
        say(f"\nexample preference row (p_chosen {row['p_chosen']:.3f}, principles {', '.join(row['principle_ids'])}):")
        say(f"  prompt:   {row['prompt'][-1]['content']}")
        say(f"  chosen:   {row['chosen'][0]['content'][:200]}")
        say(f"  rejected: {row['rejected'][0]['content'][:200]}")
    say(f"\nload it with: rlaif.runs.load({str(out / 'preferences')!r})  (TRL preference format)")
