"""The embedded default on its real models (issue 10): `aifabric up`, measured through the gateway and
straight to each engine, beside the physical limits measured in the same run.

    chat         tokens/s in all at 1, 4 and 8 concurrent requests (64 tokens each, ignore_eos), to
                 chat-fast through the gateway and to its llama-server directly (the limit)
    embeddings   p50 of one single-sentence request on a keep-alive connection (wrk -c1), and
                 requests/s of 128 concurrent single-sentence requests (wrk -c128), through the
                 gateway and to the embeddings server directly; the limit is one ONNX run of 128
                 sentences timed in this process on the same model. The 128-concurrent pair is
                 run four times, in alternating order (straight first, then the gateway first):
                 one pair swings by a few percent, as the server's batches form differently from
                 run to run, and on a shared machine a pair can land on a quiet or a busy second.
                 Beside each rate, figures that do not depend on that timing noise: the CPU each
                 process spent per request (the gateway's own cost is its CPU, on a machine where
                 the model wants every core),
                 and the mean batch the embeddings server formed (its /health counts runs and
                 inputs): smaller batches through the gateway would mean it staggers requests.

The chat client is plain threads with keep-alive http.client connections: a 64-token answer takes
hundreds of milliseconds, so the client's own cost is negligible; the embeddings load comes from wrk,
which costs far less CPU per request than any Python client would.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aifabric.testing.net import free_port_block
from benchlib import procstat
from benchlib.process import TargetProcess
from benchlib.upstream import free_port, wait_for_status
from benchlib.wrk import run_wrk

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2-int8"
CHAT_TOKENS = 64
CHAT_CONCURRENCY = (1, 4, 8)
EMBED_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
ONNX_BATCH = 128
# Pairs of 128-concurrent runs. One pair swings by +-3% (the server's batches form differently run to
# run), as much as the goal it checks (< 2%): four pairs, in alternating order (straight first in odd
# pairs, gateway first in even ones) so that drift of the machine falls on both sides alike.
C128_ROUNDS = 4


def chat_body(model: str) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me a long story about a robot and a cat."}],
            "max_tokens": CHAT_TOKENS,
            "ignore_eos": True,  # llama-server: always CHAT_TOKENS tokens, so runs compare
            "temperature": 0.7,
        }
    ).encode()


def embed_body(model: str) -> str:
    return json.dumps({"model": model, "input": EMBED_SENTENCE})


def chat_load(port: int, model: str, concurrency: int, per_client: int) -> dict[str, float]:
    """`concurrency` clients each send `per_client` requests back to back: tokens/s in all."""
    body = chat_body(model)
    tokens = [0] * concurrency
    errors = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        barrier.wait()
        for _ in range(per_client):
            try:
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status != 200:
                    errors[i] += 1
                    continue
                tokens[i] += int(json.loads(payload)["usage"]["completion_tokens"])
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                errors[i] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    total = sum(tokens)
    return {
        "concurrency": float(concurrency),
        "requests": float(concurrency * per_client),
        "tokens": float(total),
        "seconds": elapsed,
        "tokens_per_s": total / elapsed if elapsed > 0 else 0.0,
        "errors": float(sum(errors)),
    }


def onnx_batch_limit(repeats: int = 3) -> dict[str, float]:
    """One ONNX run of 128 single sentences on the bundled model, in this process: sentences/s."""
    from aifabric.local.embedder import Embedder
    from aifabric.local.models import resolve_model

    resolved = resolve_model(EMBED_MODEL, "aifabric-embed")
    assert resolved.tokenizer is not None
    embedder = Embedder(resolved.path, resolved.tokenizer, threads=2)
    texts = [f"{EMBED_SENTENCE} ({i})" for i in range(ONNX_BATCH)]
    embedder.run(texts)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder.run(texts)
        times.append(time.perf_counter() - t0)
    best = statistics.median(times)
    return {"batch": float(ONNX_BATCH), "seconds": best, "per_s": ONNX_BATCH / best}


class EmbeddedFabric:
    """`aifabric up` with the embedded default on free ports; its gateway and backends' ports."""

    def __init__(self, workdir: Path, ready_timeout: float) -> None:
        self.port = free_port()
        self.local_base = free_port_block(3)
        self.ready_timeout = ready_timeout
        argv = [
            sys.executable, "-m", "aifabric", "up",
            "--port", str(self.port),
            "--local-port-base", str(self.local_base),
            "--log-dir", str(workdir / "embedded-logs"),
        ]  # fmt: skip
        # Its own key store and usage ledger: with the user's, one key made by `aifabric keys create`
        # would turn every keyless bench request into a 401 (and the bench's traffic would be billed).
        env = dict(
            os.environ, XDG_DATA_HOME=str(workdir / "xdg-data"), XDG_STATE_HOME=str(workdir / "xdg-state")
        )
        self.proc = TargetProcess(
            "aifabric-up", argv, self.port, "/health/ready", workdir / "embedded-up.log", env=env
        )

    @property
    def chat_port(self) -> int:
        return self.local_base  # local-chat-fast, the first local backend of the default

    @property
    def embed_port(self) -> int:
        return self.local_base + 2  # local-embed

    def start(self) -> float:
        ready = self.proc.start(ready_timeout_s=self.ready_timeout)
        for port in (self.local_base, self.local_base + 1, self.local_base + 2):
            if wait_for_status(port, "/health", self.ready_timeout) is None:
                raise RuntimeError(f"local backend on port {port} not ready:\n{self.proc.log_tail()}")
        # The gateway probes on its own schedule: wait until it sees every backend up.
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if _gateway_sees_all_up(self.port):
                return ready
            time.sleep(0.2)
        raise RuntimeError(f"the gateway never saw every backend up:\n{self.proc.log_tail()}")

    def stop(self) -> None:
        self.proc.stop(grace_s=20.0)

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds so far of (the gateway, the embeddings server); llama-servers not counted."""
        gateway = embed = 0.0
        for sample in procstat.sample_tree(self.proc.pid):
            if sample.name.startswith("llama"):
                continue
            seconds = sample.cpu_ticks / procstat.CLK_TCK
            if _is_embed_server(sample.pid):
                embed += seconds
            else:
                gateway += seconds
        return gateway, embed

    def batches(self) -> tuple[int, int]:
        """(model runs, inputs) of the embeddings server so far, from its /health."""
        conn = http.client.HTTPConnection("127.0.0.1", self.embed_port, timeout=10)
        try:
            conn.request("GET", "/health")
            doc = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return int(doc["batches"]["runs"]), int(doc["batches"]["inputs"])


def _is_embed_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"aifabric.local.embed_server" in f.read()
    except OSError:
        return False


def embed_load(
    fabric: EmbeddedFabric, url: str, body: str, connections: int, duration: float
) -> dict[str, float]:
    """One wrk run, with the CPU each process spent per request and the mean batch it made."""
    cpu0, batches0 = fabric.cpu_split(), fabric.batches()
    result = run_wrk(url, body, connections, duration).to_dict()
    cpu1, batches1 = fabric.cpu_split(), fabric.batches()
    served = max(result["requests"], 1.0)
    runs, inputs = batches1[0] - batches0[0], batches1[1] - batches0[1]
    result["gateway_cpu_ms"] = 1000 * (cpu1[0] - cpu0[0]) / served
    result["embed_cpu_ms"] = 1000 * (cpu1[1] - cpu0[1]) / served
    result["mean_batch"] = inputs / runs if runs else 0.0
    return result


def _gateway_sees_all_up(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/health")
        doc = json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()
    backends = doc.get("backends") if isinstance(doc, dict) else None
    if isinstance(backends, dict):
        backends = list(backends.values())
    if not isinstance(backends, list) or not backends:
        return False
    return all(isinstance(b, dict) and b.get("state") == "up" for b in backends)


def run_embedded(workdir: Path, *, quick: bool, duration: float, ready_timeout: float) -> dict[str, Any]:
    """Every figure of the section, raw (see embedded_report.render_embedded)."""
    per_client = 2 if quick else 4
    fabric = EmbeddedFabric(workdir, ready_timeout)
    raw: dict[str, Any] = {"chat": {}, "embeddings": {}, "limits": {}}
    t0 = time.monotonic()
    raw["ready_s"] = fabric.start()
    try:
        gateway, direct = fabric.port, fabric.chat_port
        # Warm both paths (the first requests of a llama-server allocate its compute buffers).
        chat_load(direct, CHAT_MODEL, 2, 1)
        chat_load(gateway, "chat-fast", 2, 1)
        for c in CHAT_CONCURRENCY:  # direct then gateway at each level: drift hits both alike
            print(f"  chat c={c} ...", end=" ", flush=True)
            d = chat_load(direct, CHAT_MODEL, c, per_client)
            g = chat_load(gateway, "chat-fast", c, per_client)
            raw["chat"][f"c{c}"] = {"direct": d, "gateway": g}
            print(
                f"llama-server {d['tokens_per_s']:.0f} tok/s, gateway {g['tokens_per_s']:.0f} tok/s",
                flush=True,
            )

        embed_direct = f"http://127.0.0.1:{fabric.embed_port}/v1/embeddings"
        embed_gateway = f"http://127.0.0.1:{gateway}/v1/embeddings"
        run_wrk(embed_direct, embed_body(EMBED_MODEL), 8, 1)  # warm-up
        run_wrk(embed_gateway, embed_body("embeddings-general"), 8, 1)
        plan = [("one", 1)] + [("c128" if r == 0 else f"c128-{r + 1}", 128) for r in range(C128_ROUNDS)]
        for n, (name, connections) in enumerate(plan):
            print(f"  embeddings c={connections} ...", end=" ", flush=True)
            straight = functools.partial(
                embed_load, fabric, embed_direct, embed_body(EMBED_MODEL), connections, duration
            )
            through = functools.partial(
                embed_load, fabric, embed_gateway, embed_body("embeddings-general"), connections, duration
            )
            if n == 0 or n % 2 == 1:  # "one", and the 1st, 3rd, ... 128-concurrent pairs
                d, g = straight(), through()
            else:
                g, d = through(), straight()
            raw["embeddings"][name] = {"direct": d, "gateway": g}
            print(
                f"server p50 {d['p50_us'] / 1000:.1f} ms {d['rps']:.0f}/s "
                f"(batch {d['mean_batch']:.0f}, {d['embed_cpu_ms']:.2f} ms CPU/req), "
                f"gateway p50 {g['p50_us'] / 1000:.1f} ms {g['rps']:.0f}/s "
                f"(batch {g['mean_batch']:.0f}, gateway {g['gateway_cpu_ms']:.2f} + "
                f"server {g['embed_cpu_ms']:.2f} ms CPU/req)",
                flush=True,
            )
    finally:
        fabric.stop()
    raw["limits"]["onnx_batch"] = onnx_batch_limit()
    raw["elapsed_s"] = round(time.monotonic() - t0, 1)
    return raw
