"""Request ids are unique across forked workers, and a client's own id is kept."""

from __future__ import annotations

import os

from aifabric.gateway.request_ids import request_id as _request_id


def test_forked_workers_do_not_repeat_request_ids() -> None:
    parent_id = _request_id({})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a worker forked after the module was imported
        os.write(write_fd, _request_id({}).encode())
        os._exit(0)
    os.close(write_fd)
    child_id = os.read(read_fd, 200).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    assert child_id.split("-")[0] == f"{pid:x}"


def test_client_request_id_is_kept_and_bounded() -> None:
    assert _request_id({"x-request-id": "abc-123"}) == "abc-123"
    assert _request_id({"x-request-id": "x" * 500}) != "x" * 500
