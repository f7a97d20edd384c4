"""One `aifabric up` on the embedded default for the whole session: real models, real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Up


@pytest.fixture(scope="session")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    # A shell as `make up PORT=...` leaves it, and worse: llama-server reads every flag from
    # LLAMA_ARG_<FLAG> and its key from LLAMA_API_KEY (llama-cpp-python's server: PORT, HOST, API_KEY,
    # MODEL ...); none of it may reach the local backends.
    hostile = {
        "PORT": "1",
        "HOST": "0.0.0.0",
        "API_KEY": "locked-out",
        "MODEL": "/nonexistent.gguf",
        "LLAMA_API_KEY": "locked-out",
        "LLAMA_ARG_ENDPOINT_SLOTS": "0",
        "LLAMA_ARG_N_PARALLEL": "1",
    }
    up = Up(tmp_path_factory.mktemp("fabric"), env=hostile)
    try:
        up.wait_for("Ctrl-C stops everything.")
        yield up
    finally:
        up.stop()
        # What `aifabric up` printed, for when a test fails: pytest shows it with the last test's report.
        print(f"--- aifabric up output ---\n{up.output}")
