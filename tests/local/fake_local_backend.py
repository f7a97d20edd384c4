"""A stand-in for a local inference server, run as a real process by the supervisor tests.

    python fake_local_backend.py --port P [--load-seconds S] [--exit-code N] [--ignore-term] [--fork-child]
                                          [--print-env NAME ...]

Like llama-cpp-python it listens only after "loading"; it answers GET /ready with 200. `--exit-code`
makes it exit during loading (a model that cannot load); `--ignore-term` makes it ignore SIGTERM (a hung
server the supervisor must SIGKILL); `--fork-child` leaves a grandchild in its process group that would
be an orphan if only the leader were signalled (its pid is printed as "child pid N").
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, default=0.0)
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--fork-child", action="store_true")
    parser.add_argument("--print-env", action="append", default=[], help="print this variable's value")
    args = parser.parse_args()
    print(f"fake backend pid {os.getpid()} loading", flush=True)
    for name in args.print_env:
        print(f"env {name}={os.environ.get(name, '<unset>')}", flush=True)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fork_child:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL of the group ends it
            while True:
                time.sleep(1)
        print(f"child pid {pid}", flush=True)
    time.sleep(args.load_seconds)
    if args.exit_code is not None:
        print(f"cannot load the model: exiting with {args.exit_code}", flush=True)
        return int(args.exit_code)
    server = HTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
