"""Minimal reverse proxies, one per candidate HTTP stack, for `bench/stacks.py` (issue 2).

Each module is a script run from bench/.venv-stacks (not the project venv):
`python <module>.py --port P --upstream-port U`. Every one does the same work per request: read
the body, parse the JSON, rewrite `model`, re-encode (orjson everywhere, so the JSON cost is equal),
forward over a pooled keep-alive upstream connection, return the upstream body.
"""
