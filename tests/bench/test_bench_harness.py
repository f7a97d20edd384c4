"""The benchmark harness (bench/) parses, measures and reports correctly.

No timing assertions: the figures themselves are whatever the machine gives; what is checked is
that the harness reads wrk and /proc right, talks real HTTP on 127.0.0.1, and that its report
computes ratios, added latencies and goals from the numbers it was given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from benchlib import procstat, summary, wrk  # noqa: E402
from benchlib.process import TargetProcess  # noqa: E402
from benchlib.report import Spread, fmt_ratio, fmt_spread  # noqa: E402
from benchlib.stream_client import percentile, run_streams  # noqa: E402
from benchlib.targets import Upstreams, aifabric_config, litellm_config  # noqa: E402
from benchlib.upstream import (  # noqa: E402
    NginxUpstream,
    SlowStreamUpstream,
    chat_request,
    free_port,
    http_get_status,
)
from profile_gateway import function_of, parse_collapsed, parse_strace_summary  # noqa: E402

WRK_STDOUT = """Running 2s test @ http://127.0.0.1:8000/v1/chat/completions
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    60.00us   10.00us   4.10ms   98.00%
  34939 requests in 2.10s, 15.90MB read
Requests/sec:  16641.46
Transfer/sec:      7.57MB
WRKJSON {"requests":34939,"duration_us":2099515,"bytes":16672345,"connect_errors":0,"read_errors":1,\
"write_errors":0,"status_errors":3,"timeouts":2,"p50_us":58,"p90_us":64,"p99_us":89,"mean_us":66.8,\
"max_us":4098}
"""


def test_wrk_output_is_parsed_from_the_done_line() -> None:
    r = wrk.parse_output(WRK_STDOUT)
    assert r.requests == 34939
    assert r.rps == pytest.approx(34939 / 2.099515)
    assert (r.p50_us, r.p90_us, r.p99_us, r.max_us) == (58.0, 64.0, 89.0, 4098.0)
    assert r.errors == 6  # read + status + timeouts
    assert r.status_errors == 3


def test_wrk_output_without_the_done_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRKJSON"):
        wrk.parse_output("Running 2s test\nRequests/sec: 10\n")


def test_wrk_script_carries_the_body_verbatim_and_refuses_a_terminator() -> None:
    body = chat_request("chat-fast")
    script = wrk.lua_script(body, {"Authorization": "Bearer k"})
    assert f"[==[{body}]==]" in script
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script
    with pytest.raises(ValueError):
        wrk.lua_script('{"x": "]==]"}', {})


def test_wrk_never_gets_more_threads_than_connections() -> None:
    assert wrk.wrk_command("http://127.0.0.1:1/", Path("s.lua"), 1, 2)[1] == "-t1"
    assert wrk.wrk_command("http://127.0.0.1:1/", Path("s.lua"), 64, 2)[1:3] == ["-t2", "-c64"]


def test_proc_stat_with_spaces_and_parentheses_in_the_name() -> None:
    line = "4242 (my (odd) proc) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 99 0 0"
    comm, ppid, ticks = procstat.parse_stat(line)
    assert (comm, ppid, ticks) == ("my (odd) proc", 17, 325)


def test_status_fields_in_kib_and_zero_when_absent() -> None:
    text = "Name:\tpython\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
    assert procstat.parse_status_kib(text, "VmHWM") == 51200
    assert procstat.parse_status_kib(text, "VmSwap") == 0


def test_a_real_process_tree_is_read_from_proc() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        samples = procstat.sample_tree(os.getpid())
        pids = {s.pid for s in samples}
        assert os.getpid() in pids and child.pid in pids
        assert all(s.hwm_kib >= s.rss_kib > 0 for s in samples if s.pid == os.getpid())
        biggest, total, count = procstat.peak_rss_mib(samples)
        assert count == len(samples) and total >= biggest > 0
    finally:
        child.kill()
        child.wait()


def test_cpu_delta_counts_new_processes_whole_and_never_goes_negative() -> None:
    before = [procstat.ProcSample(1, "a", 100, 0, 0), procstat.ProcSample(2, "b", 50, 0, 0)]
    after = [procstat.ProcSample(1, "a", 130, 0, 0), procstat.ProcSample(3, "c", 20, 0, 0)]
    assert procstat.cpu_delta_seconds(before, after) == pytest.approx(50 / procstat.CLK_TCK)
    assert procstat.cpu_delta_seconds(after, []) == 0.0


def test_target_process_reports_ready_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    target = TargetProcess("http.server", argv, port, "/", tmp_path / "log.txt")
    ready = target.start(ready_timeout_s=30)
    pid = target.pid
    assert ready > 0 and http_get_status(port, "/") == 200
    target.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert http_get_status(port, "/") == 0


def test_a_target_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bad config: no such role'); sys.exit(3)"]
    target = TargetProcess("broken", argv, free_port(), "/", tmp_path / "log.txt")
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*bad config"):
        target.start(ready_timeout_s=30)


def test_nginx_upstream_answers_chat_stream_embeddings_and_probes() -> None:
    with NginxUpstream() as up:
        assert http_get_status(up.json_port, "/health") == 200
        assert http_get_status(up.sse_port, "/v1/models") == 200
        assert http_get_status(up.json_port, "/get_model_info") == 404  # no model_path to chase
        r = wrk.run_wrk(f"http://127.0.0.1:{up.json_port}/v1/chat/completions", chat_request("m"), 2, 1)
        assert r.requests > 0 and r.errors == 0


def test_stream_client_times_first_token_and_whole_stream() -> None:
    with SlowStreamUpstream(chunks=4, interval_ms=1) as up:
        stats = run_streams(up.port, "/v1/chat/completions", chat_request("m", stream=True), None, 2, 12, 20)
    assert stats.count == 12 and stats.errors == 0
    assert 0 < stats.ttft_p50_us <= stats.total_p50_us


def test_stream_client_counts_a_non_stream_answer_as_an_error() -> None:
    with SlowStreamUpstream() as up:
        stats = run_streams(up.port, "/v1/nothing", "{}", None, 1, 3, 20)
    assert stats.count == 0 and stats.errors == stats.bad_status == 3


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([float(x) for x in range(1, 101)], 99) == 99.0
    assert percentile([5.0], 99) == 5.0


def test_the_bench_fabric_file_loads_as_aifabric_reads_it(tmp_path: Path) -> None:
    from aifabric.config.load import load_config

    path = tmp_path / "fabric.yaml"
    path.write_text(aifabric_config(Upstreams(5000, 5001, 5002), 6000))
    config = load_config(str(path))
    assert set(config.roles) == {
        "chat-fast",
        "chat-stream",
        "chat-slow",
        "chat-slow-translated",
        "embeddings-general",
    }
    assert config.backends["bench-sse"].url == "http://127.0.0.1:5001/v1"
    assert config.roles["chat-slow"].targets[0].backend == "bench-slow"
    # The same slow upstream, declared as serving no API natively: /v1/responses is translated.
    assert config.backends["bench-slow-chat-only"].apis == ()
    assert config.backends["bench-slow-chat-only"].url == "http://127.0.0.1:5002/v1"


def test_litellm_gets_one_model_per_upstream() -> None:
    lite = yaml.safe_load(litellm_config(Upstreams(5000, 5001, 5002)))
    bases = {m["model_name"]: m["litellm_params"]["api_base"] for m in lite["model_list"]}
    assert bases == {
        "chat-fast": "http://127.0.0.1:5000/v1",
        "chat-stream": "http://127.0.0.1:5001/v1",
        "chat-slow": "http://127.0.0.1:5002/v1",
        "embeddings-general": "http://127.0.0.1:5000/v1",
    }


def _target(name: str, label: str, rps64: float, p50_c1: float, cpu: float, **extra: Any) -> dict[str, Any]:
    def run(rps: float, p50: float) -> dict[str, float]:
        return {
            "rps": rps,
            "p50_us": p50,
            "p99_us": p50 * 3,
            "cpu_us_per_request": cpu,
            "errors": 0.0,
            "foreign_share": extra.get("foreign", 0.0),
        }

    return {
        "name": name,
        "label": label,
        "workers": extra.get("workers", 1),
        "error": None,
        "runs": {
            "chat_c1": [run(rps64 / 4, p50_c1), run(rps64 / 4, p50_c1 + 20)],
            "chat_c16": [run(rps64, p50_c1)],
            "chat_c64": [run(rps64, p50_c1), run(rps64 * 1.1, p50_c1)],
            "embed_c16": [run(rps64, p50_c1)],
            "stream_c16": [run(rps64, p50_c1)],
        },
        "ttft": [{"count": 10, "errors": 0, "ttft_p50_us": extra.get("ttft", 100.0), "total_p50_us": 9000.0}],
        "ready_s": extra.get("ready", [0.2]),
        "rss_max_mib": extra.get("rss", 30.0),
        "rss_total_mib": extra.get("rss", 30.0) * 2,
        "procs": 2,
    }


def _raw() -> dict[str, Any]:
    return {
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "busy_before": 0.5, "busy": True},
        "config": {"rounds": 2, "duration_s": 5},
        "targets": [
            _target("direct", "direct (nginx)", 100_000, 60, 0),
            _target(
                "aifabric-w2", "aifabric --workers 2", 8_000, 260, 150, workers=2, ttft=1_600.0, foreign=0.9
            ),
            _target("vllm-router", "vllm-router", 12_000, 200, 120),
            _target(
                "litellm-w2", "LiteLLM (2 workers)", 80, 17_000, 17_000, workers=2, rss=350.0, ready=[6.0]
            ),
        ],
    }


def test_report_ratios_against_direct_and_each_peer() -> None:
    table = summary.ratio_table(_raw())
    aifabric_row = next(line for line in table.splitlines() if line.startswith("| aifabric"))
    # mean c=64 RPS: aifabric 8,400, direct 105,000, vllm-router 12,600, LiteLLM 84
    assert aifabric_row.split(" | ")[1:] == ["0.08x", "1.0x", "0.67x", "100x |"]


def test_report_shows_added_latency_and_spread() -> None:
    table = summary.chat_table(_raw())
    row = next(line for line in table.splitlines() if line.startswith("| aifabric"))
    # p50 c=1 over rounds 260 and 280 µs, direct's mean 70 µs: added 0.200 ms (0.190..0.210)
    assert "0.200 ms (0.190..0.210)" in row
    assert "8,400 (8,000..8,800)" in row


def test_goals_are_judged_for_aifabric() -> None:
    judged = {goal: ok for goal, _, _, ok in summary.goals(_raw())}
    assert judged["RPS c=64 vs vllm-router (aifabric --workers 2)"] is True  # 0.67x >= 0.5x
    assert judged["added p50 c=1"] is True  # 0.2 ms
    assert judged["gateway CPU per request (c=64)"] is True
    assert judged["added time to first token"] is False  # 1.6 ms - 0.1 ms = 1.5 ms
    assert judged["added time to first token, /v1/responses translated"] is None  # not measured
    assert judged["added time to first token, /v1/messages translated"] is None
    assert judged["peak RSS per worker"] is True
    report = summary.render(_raw())
    assert "**missed**" in report
    # 7 of the 28 runs saw 90% foreign load: 22% on average, over the 15% that flags a busy machine
    assert "used 22% of the CPUs on average" in report and "The machine was busy" in report


def test_a_failed_target_is_shown_not_dropped() -> None:
    raw = _raw()
    raw["targets"].append(
        {
            "name": "sglang-router",
            "label": "sglang-router",
            "error": "RuntimeError: exited with 1",
            "runs": {},
        }
    )
    assert "failed: RuntimeError: exited with 1" in summary.chat_table(raw)
    assert "sglang-router" not in summary.ratio_table(raw)


def test_spread_and_ratio_formatting() -> None:
    assert fmt_spread(Spread.of([10_000, 10_050])) == "10,025"  # within 1%: no range
    assert fmt_spread(None) == "-"
    assert fmt_ratio(150.0, 1.5) == "100x"
    assert fmt_ratio(1.0, None) == "-"


def test_a_direct_only_run_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    cmd = [sys.executable, str(BENCH / "run.py"), "--only", "direct", "--duration", "1", "--rounds", "1"]
    cmd += ["--ttft-requests", "5", "--out", str(out), "--no-readme"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw = json.loads(out.with_suffix(".json").read_text())
    direct = raw["targets"][0]
    assert direct["name"] == "direct" and direct["error"] is None
    assert all(
        direct["runs"][k][0]["requests"] > 0 for k in ("chat_c1", "chat_c64", "embed_c16", "stream_c16")
    )
    assert all(direct["runs"][k][0]["errors"] == 0 for k in direct["runs"])
    assert direct["ttft"][0]["count"] == 5
    assert "| direct (nginx) |" in out.read_text()


def test_profile_stacks_are_ranked_by_function() -> None:
    collapsed = (
        "run (runners.py:118);handle (app.py:94);_write (server.py:279) 30\n"
        "run (runners.py:118);handle (app.py:94);_write (server.py:281) 10\n"
        "run (runners.py:118) 60\n"
        "garbage line\n"
    )
    own, inclusive, total = parse_collapsed(collapsed)
    assert total == 100
    assert own == {"_write (server.py)": 40, "run (runners.py)": 60}
    assert inclusive["run (runners.py)"] == 100 and inclusive["handle (app.py)"] == 40
    assert function_of("<module> (aifabric:6)") == "<module> (aifabric)"


def test_strace_summary_counts_calls_with_and_without_errors() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 26.58    0.065109          16      3859           write
 18.72    0.045844          11      3863       120 read
  0.00    0.000010          10         1           close
------ ----------- ----------- --------- --------- ----------------
100.00    0.111066          14      7723       120 total
"""
    assert parse_strace_summary(text) == {"write": 3859, "read": 3863, "close": 1}


@pytest.mark.parametrize(
    ("api", "runs"), [("/v1/responses", "ttft_responses"), ("/v1/messages", "ttft_messages")]
)
def test_translated_time_to_first_token_is_judged(api: str, runs: str) -> None:
    raw = _raw()
    aifabric = next(t for t in raw["targets"] if t["name"] == "aifabric-w2")
    # direct's chat stream: 100 µs to the first token; the translated stream: 600 µs, then 1.6 ms
    aifabric[runs] = [{"count": 10, "errors": 0, "ttft_p50_us": 600.0, "total_p50_us": 9000.0}]
    judged = {goal: (shown, ok) for goal, _, shown, ok in summary.goals(raw)}
    assert judged[f"added time to first token, {api} translated"] == ("0.500 ms", True)
    aifabric[runs] = [{"count": 10, "errors": 2, "ttft_p50_us": 1600.0, "total_p50_us": 9000.0}]
    judged = {goal: (shown, ok) for goal, _, shown, ok in summary.goals(raw)}
    assert judged[f"added time to first token, {api} translated"] == ("1.50 ms", False)
