"""``rlaif bench all``: every bench in one command, each in a process of its own (as a user runs it), into
``<out>/results.json`` and a Markdown table ``<out>/results.md``.

The benches: generate (vLLM vs transformers), judge (logprob vs generate-and-parse, the prompt layouts,
the machine's peak), dpo (precomputed reference vs reference in the loop), grpo (seconds per step, sandbox
parallelism) and ppo (seconds per step split into rollout, reward and train) where it is installed. Each
reports its ratios against a baseline measured in its own command, and the CPU it ran on. ``--quick``
passes each bench its smallest sensible sizes (a smoke run, not figures to quote).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import typer

# bench -> (arguments of a full run, arguments of a --quick run)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "generate": ([], ["--prompts", "4", "--max-tokens", "8", "--no-other-dtype"]),
    "judge": ([], ["--pairs", "4", "--principles", "2", "--no-other-dtype", "--no-engines", "--scaling-sizes", "2,4"]),
    "dpo": ([], ["--steps", "2"]),
    "grpo": ([], ["--steps", "2", "--programs", "4", "--generations", "2", "--completion-tokens", "8"]),
    "ppo": ([], ["--steps", "2"]),
}


# results.json says it was written by this command; only such a folder is replaced by a new run.
KIND = "rlaif-bench-all"


def ours(out: Path) -> bool:
    """True when ``out/results.json`` is one this command wrote (its ``kind`` says so)."""
    try:
        return json.loads((out / "results.json").read_text()).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path) -> None:
    """``--out`` is a new or empty folder, or an earlier ``bench all``'s (results.json of ours, and nothing
    else but results.md): every other file in it is a user's and is never replaced."""
    from bench.args import BenchArgumentError

    if out.exists() and not out.is_dir():
        raise BenchArgumentError(f"--out {out} is a file; give a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if any(p.name not in ("results.json", "results.md") for p in out.iterdir()) or not ours(out):
        raise BenchArgumentError(f"--out {out} holds files that rlaif bench all did not write; give a new or "
                                 f"empty folder")


def available() -> list[str]:
    import typer

    import bench

    app = typer.Typer()
    bench.register(app)
    names = {c.name for c in app.registered_commands}
    return [b for b in BENCHES if b in names]


def headline(result: dict) -> str:
    """The bench's top-level numbers (the ratios and rates it reports), for the table."""
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()
             if isinstance(v, int | float) and not isinstance(v, bool)]
    return ", ".join(shown) or "-"


def table(results: dict[str, dict]) -> str:
    lines = ["| bench | seconds | figures |", "| --- | --- | --- |"]
    for name, r in results.items():
        figures = headline(r["result"]) if r.get("result") else f"failed: {r.get('error', '?')}"
        lines.append(f"| {name} | {r['seconds']:.0f} | {figures} |")
    return "\n".join(lines) + "\n"


def run_all(out: Path, quick: bool, only: list[str] | None, say) -> dict:
    from bench.generate import describe_machine, machine_info
    from plumbing.atomic import write_text

    names = [b for b in available() if not only or b in only]
    machine = machine_info()
    say(describe_machine(machine))
    results: dict[str, dict] = {}
    for name in names:
        args = BENCHES[name][1 if quick else 0]
        say(f"bench {name} {' '.join(args)} ...")
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "rlaif", "bench", name, *args, "--json"], capture_output=True,
                             text=True)
        seconds = time.perf_counter() - t0
        entry: dict = {"args": args, "seconds": round(seconds, 1), "exit_code": res.returncode}
        if res.returncode == 0:
            entry["result"] = json.loads(res.stdout.strip().splitlines()[-1])
        else:
            entry["error"] = (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
        results[name] = entry
        say(f"  {name}: {headline(entry['result']) if 'result' in entry else 'failed: ' + entry['error']}")
    summary = {"kind": KIND, "machine": machine, "quick": quick, "benches": results}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    write_text(out / "results.md", f"{describe_machine(machine)}\n\n{table(results)}")
    return summary


def register(bench_app: typer.Typer) -> None:
    @bench_app.command("all")
    def all_(out: Path = typer.Option(Path("bench"), "--out", help="Folder for results.json and results.md."),
             quick: bool = typer.Option(False, "--quick", help="Smallest sizes: a smoke run of every bench."),
             only: list[str] = typer.Option([], "--only", help="Run only these benches (repeat)."),
             as_json: bool = typer.Option(False, "--json", help="Print results.json's content.")) -> None:
        """Every bench (generate, judge, dpo, grpo, ppo), each in its own process; results.json + a Markdown table."""
        from bench.args import BenchArgumentError

        unknown = [b for b in only if b not in BENCHES]
        if unknown:
            raise BenchArgumentError(f"--only {unknown[0]}: not a bench; choose from {', '.join(BENCHES)}")
        check_out(out)
        summary = run_all(out, quick, only or None, typer.echo if not as_json else lambda _: None)
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            typer.echo(table(summary["benches"]))
            typer.echo(f"written: {out / 'results.json'}, {out / 'results.md'}")
        if any(r["exit_code"] for r in summary["benches"].values()):
            raise typer.Exit(1)
