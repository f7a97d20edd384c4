"""Pieces of the benchmark harness: upstreams, load generators, /proc readings, reports.

`bench/run.py` (the gateway benchmark) and `bench/stacks.py` (the HTTP-stack comparison) are thin
drivers over these modules. Nothing here imports aifabric: the gateway is measured from outside,
as a process, exactly like its peers.
"""
