#!/usr/bin/env python3
"""Session affinity, measured: time to first token of a conversation's follow-up turns, with and without.

    .venv/bin/python bench/affinity.py                     # part of `make bench`
    .venv/bin/python bench/affinity.py --engine llama-cpp-python --turns 3

Two chat engines of the embedded default's model (SmolLM2-135M), each holding one conversation's
context (one slot, no host-memory prompt cache), behind one aifabric gateway role with both as
targets: two slots' worth of contexts. Several conversations, each opening with its own long system
prompt, take turns; every follow-up turn resends the whole history. A follow-up that reaches the
engine holding its conversation reuses the cached prefix and only prefills the new turn; one that
lands on the other engine prefills everything again. Measured once with `affinity: true` (the key is
the hash of the leading messages: no header needed) and once with `affinity: false`, each from cold
engines (restarted between the two). Placement by rendezvous hashing is the conversations' luck: the
report says where each one landed.

Engine: llama.cpp's llama-server (the default's chat engine) when a build is found (`--llama-server
PATH`, else the one `make up` links into the venv or one on PATH, else aifabric's build cache under
~/.cache/aifabric/llama-server/), else llama-cpp-python, whose server keeps the last prompt's KV state
the same way. Writes bench/results/affinity.{md,json}.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
MODEL_NAME = "smollm2-135m-instruct"
WORDS = [
    *("river", "stone", "lantern", "orbit", "copper", "meadow", "signal", "harbor", "velvet", "quartz"),
    *("ember", "willow", "falcon", "canyon", "prism", "tundra", "beacon", "saffron", "glacier", "cobalt"),
]


@dataclass
class Engine:
    name: str
    kind: str  # the backend kind the gateway knows it as
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def find_llama_server(given: str | None) -> Path | None:
    """--llama-server, else the one `make up` links into the venv (or on PATH), else aifabric's cache."""
    if given:
        return Path(given)
    linked = Path(sys.executable).with_name("llama-server")
    if linked.exists():
        return linked.resolve()  # its libraries sit beside the real file
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aifabric" / "llama-server"
    found = sorted(cache.glob("*/llama-server"))
    return found[-1] if found else None


def free_port() -> int:
    from aifabric.testing.net import free_port as pick

    return pick()


def start_engine(name: str, engine: str, server: Path | None, threads: int, ctx: int, logdir: Path) -> Engine:
    from aifabric.local.models import resolve_model

    port = free_port()
    model = resolve_model(MODEL_NAME, "llama-cpp-python").path
    log = (logdir / f"affinity-{name}.log").open("wb")
    if engine == "llama-server":
        assert server is not None
        argv = [
            str(server), "-m", str(model), "-a", MODEL_NAME, "--host", "127.0.0.1", "--port", str(port),
            "-c", str(ctx), "-np", "1", "-t", str(threads), "--cache-ram", "0", "--metrics", "--slots",
        ]  # fmt: skip
        kind, ready = "llamacpp", "/health"
        env = {**os.environ, "LD_LIBRARY_PATH": str(server.parent)}
    else:
        argv = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_NAME,
            "--n_ctx", str(ctx), "--n_threads", str(threads), "--host", "127.0.0.1", "--port", str(port),
            "--interrupt_requests", "False",
        ]  # fmt: skip
        kind, ready = "llama-cpp-python", "/v1/models"
        env = {k: v for k, v in os.environ.items() if k.upper() not in ("PORT", "HOST", "API_KEY")}
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}: see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2) as resp:
                if resp.status == 200:
                    return Engine(name, kind, port, proc)
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{name} was not ready within 180 s: see {log.name}")


def stop_engine(engine: Engine) -> None:
    engine.proc.terminate()
    try:
        engine.proc.wait(10)
    except subprocess.TimeoutExpired:
        engine.proc.kill()
        engine.proc.wait()


def system_prompt(i: int, words: int) -> str:
    rng = random.Random(1000 + i)
    return f"Conversation {i}. Background notes: " + " ".join(rng.choice(WORDS) for _ in range(words))


def ttft(client: Any, messages: list[dict[str, str]]) -> tuple[float, str, str]:
    """Seconds to the first content token of a streamed answer, the backend that served it, the text."""
    start = time.perf_counter()
    first: float | None = None
    text = []
    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, max_tokens=8, temperature=0, stream=True
    ) as resp:
        backend = resp.headers.get("x-aifabric-backend", "?")
        for chunk in resp.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - start
                text.append(chunk.choices[0].delta.content)
    return (first if first is not None else time.perf_counter() - start), backend, "".join(text)


def run_mode(args: argparse.Namespace, affinity: bool, server: Path | None, logdir: Path) -> dict[str, Any]:
    from aifabric.config.load import load_config_text
    from aifabric.testing.gateway import RunningGateway

    engines = [
        start_engine(name, args.engine, server, args.threads, args.context, logdir)
        for name in ("engine-a", "engine-b")
    ]
    try:
        backends = "\n".join(f'  {e.name}: {{kind: {e.kind}, url: "{e.url}"}}' for e in engines)
        targets = ", ".join(f"{{backend: {e.name}, model: {MODEL_NAME}}}" for e in engines)
        fabric = (
            f"backends:\n{backends}\nroles:\n  chat:\n    kind: chat\n    targets: [{targets}]\n"
            f"    affinity: {str(affinity).lower()}\nretry: {{try_timeout: 120s}}\n"
        )
        gw = RunningGateway(load_config_text(fabric, "affinity-bench.yaml", environ={}), probe=True).start()
        try:
            client = gw.openai(timeout=120)
            histories = [
                [{"role": "system", "content": system_prompt(i, args.prompt_words)}]
                for i in range(args.conversations)
            ]
            first_turn: list[float] = []
            follow_ups: list[float] = []
            placement: dict[int, list[str]] = {i: [] for i in range(args.conversations)}
            for turn in range(args.turns):
                for i, history in enumerate(histories):
                    history.append({"role": "user", "content": f"Turn {turn}: name one word from the notes."})
                    seconds, backend, text = ttft(client, history)
                    history.append({"role": "assistant", "content": text or "ok"})
                    placement[i].append(backend)
                    (first_turn if turn == 0 else follow_ups).append(seconds)
            hits = sum(
                1 for where in placement.values() for prev, now in itertools.pairwise(where) if prev == now
            )
            total = sum(len(where) - 1 for where in placement.values())
        finally:
            gw.stop()
    finally:
        for e in engines:
            stop_engine(e)
    return {
        "affinity": affinity,
        "first_turn_ttft_ms": [round(s * 1000, 1) for s in first_turn],
        "follow_up_ttft_ms": [round(s * 1000, 1) for s in follow_ups],
        "follow_up_median_ms": round(statistics.median(follow_ups) * 1000, 1),
        "follow_up_mean_ms": round(statistics.fmean(follow_ups) * 1000, 1),
        "follow_up_same_engine": f"{hits}/{total}",
        "placement": {f"conversation {i}": where for i, where in placement.items()},
    }


def render(raw: dict[str, Any]) -> str:
    cfg = raw["config"]
    lines = [
        "# Session affinity: time to first token of follow-up turns",
        "",
        f"Engine: {cfg['engine']} x 2 (one slot each, {cfg['threads']} thread(s), context {cfg['context']}), "
        f"model {MODEL_NAME}; {cfg['conversations']} conversations x {cfg['turns']} turns, system prompts of "
        f"{cfg['prompt_words']} words; streamed, max_tokens 8. "
        f"Machine load at start: {cfg['loadavg_1m']:.2f}.",
        "",
        "| affinity | follow-up TTFT median | mean | follow-ups on the same engine "
        "| first-turn TTFT median |",
        "|---|---|---|---|---|",
    ]
    for mode in raw["modes"]:
        lines.append(
            f"| {'on' if mode['affinity'] else 'off'} | {mode['follow_up_median_ms']} ms | "
            f"{mode['follow_up_mean_ms']} ms | {mode['follow_up_same_engine']} | "
            f"{statistics.median(mode['first_turn_ttft_ms']):.1f} ms |"
        )
    lines += [
        "",
        "Without affinity, where the turns land is chance, and so are the median and the mean: a follow-up",
        "on the other engine prefills its whole prompt again, and so does one on the same engine if the",
        "other conversation ran there in between (one slot each: its KV cache was replaced).",
    ]
    lines += ["", "Where each conversation's turns landed:", ""]
    for mode in raw["modes"]:
        for conv, where in mode["placement"].items():
            lines.append(f"- affinity {'on' if mode['affinity'] else 'off'}, {conv}: {' -> '.join(where)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("auto", "llama-server", "llama-cpp-python"), default="auto")
    ap.add_argument("--llama-server", help="path of a llama-server binary (default: aifabric's cached build)")
    ap.add_argument("--conversations", type=int, default=2, help="default 2: one per engine's slot")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--prompt-words", type=int, default=600, help="length of each conversation's opening")
    ap.add_argument("--threads", type=int, default=1, help="per engine")
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=RESULTS / "affinity.md")
    args = ap.parse_args(argv)
    server = find_llama_server(args.llama_server)
    if args.engine == "auto":
        args.engine = "llama-server" if server is not None and server.exists() else "llama-cpp-python"
    if args.engine == "llama-server" and (server is None or not server.exists()):
        raise SystemExit("no llama-server binary: pass --llama-server PATH or use --engine llama-cpp-python")
    logdir = RESULTS / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    keys = ("engine", "conversations", "turns", "prompt_words", "threads", "context")
    cfg: dict[str, Any] = {k: getattr(args, k) for k in keys}
    cfg["loadavg_1m"] = os.getloadavg()[0]
    modes = []
    for affinity in (True, False):
        print(f"affinity {'on' if affinity else 'off'} ...", flush=True)
        modes.append(run_mode(args, affinity, server, logdir))
        print(f"  follow-up TTFT median {modes[-1]['follow_up_median_ms']} ms", flush=True)
    raw = {"config": cfg, "modes": modes}
    report = render(raw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
