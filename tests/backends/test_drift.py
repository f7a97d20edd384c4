"""Model-id drift messages: name both ids and the fix."""

from __future__ import annotations

from aifabric.backends.base import adapter_for, check_models, closest_model, origin_of
from aifabric.backends.llamacpp import slots_load
from aifabric.backends.vllm import vllm_load


def test_the_runbook_incident_is_named_with_its_fix() -> None:
    msgs = check_models(["bge-base-en-v1.5"], ["BAAI/bge-base-en-v1.5"], "motoko-embed")
    assert len(msgs) == 1
    assert msgs[0].startswith("config says bge-base-en-v1.5, motoko-embed serves BAAI/bge-base-en-v1.5")
    assert "'BAAI/bge-base-en-v1.5'" in msgs[0]


def test_matching_ids_and_unknown_lists_say_nothing() -> None:
    assert check_models(["a", "b"], ["a", "b", "c"], "x") == []
    assert check_models(["a"], [], "x") == [], "no model list, nothing to say"


def test_closest_served_id_is_suggested() -> None:
    served = ["Qwen/Qwen2.5-7B-Instruct-AWQ", "meta-llama/Meta-Llama-3-8B-Instruct"]
    assert closest_model("Qwen2.5-7B-Instruct-AWQ", served) == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert closest_model("llama-3-8b-instruct", served) == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert closest_model("QWEN/qwen2.5-7b-instruct-awq", served) == "Qwen/Qwen2.5-7B-Instruct-AWQ"


def test_nothing_close_lists_what_is_served() -> None:
    msgs = check_models(["gpt-4o"], ["alpha", "beta", "gamma"], "cloud")
    assert msgs == [
        "config says gpt-4o, cloud does not serve it (it serves alpha, beta, gamma): "
        "load 'gpt-4o' on cloud or point the target at a model it serves"
    ]


def test_ollama_latest_tag_is_implicit() -> None:
    ollama = adapter_for("ollama")
    assert ollama.check_models(["llama3"], ["llama3:latest"], "o") == []
    assert ollama.check_models(["llama3:70b"], ["llama3:latest"], "o") != []


def test_origin_strips_v1() -> None:
    assert origin_of("http://h:8000/v1") == "http://h:8000"
    assert origin_of("http://h:8000/v1/") == "http://h:8000"
    assert origin_of("https://api.example.com/proxy/v1") == "https://api.example.com/proxy"
    assert origin_of("http://h:11434") == "http://h:11434"


def test_vllm_saturation_from_metrics() -> None:
    text = (
        "# HELP vllm:num_requests_waiting Number of requests waiting.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m"} 9.0\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
        "garbage line\n"
    )
    load, why = vllm_load(text)
    assert load == {"requests_waiting": 12.0, "kv_cache_usage": 0.5}
    assert why == "saturated: 12 requests waiting"
    load, why = vllm_load('vllm:kv_cache_usage_perc{model_name="m"} 0.97\nvllm:num_requests_waiting 0\n')
    assert why == "saturated: KV cache 97% full"
    assert vllm_load("vllm:num_requests_waiting 1\n")[1] is None


def test_llama_server_slots() -> None:
    assert slots_load([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]) == (
        {"slots_busy": 1.0, "slots_total": 2.0},
        None,
    )
    _, why = slots_load([{"id": 0, "state": 1}])
    assert why == "saturated: all 1 slots busy, new requests queue"
    assert slots_load({"error": "not supported"}) == ({}, None)
