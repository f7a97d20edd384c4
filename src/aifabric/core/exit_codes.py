"""The exit statuses of the `aifabric` commands, in one place (scripts and cron jobs read them).

The same numbers mean the same degree of trouble in every command:

    0  OK           all good: every backend up, every check passed, the drill saw what it expected
    1  ATTENTION    something needs a look: a backend degraded/loading/asleep (health, status); a doctor
                    check failed; a drill's expectation not met; `config import litellm` left entries
                    out; a command error
    2  BROKEN       a backend down or serving the wrong model (health, status); a drill that could not
                    run; `config import litellm`: the LiteLLM file cannot be read (nothing is written);
                    the command line itself is wrong (usage)
    3  UNREACHABLE  `status`: the gateway did not answer
  130  INTERRUPTED  Ctrl-C
"""

from __future__ import annotations

__all__ = [
    "ATTENTION",
    "BROKEN",
    "FAILED",
    "INTERRUPTED",
    "NOT_RUN",
    "OK",
    "UNREACHABLE",
    "UNREADABLE",
    "UNWRITABLE",
    "USAGE",
]

OK = 0
ATTENTION = 1
BROKEN = 2
UNREACHABLE = 3
INTERRUPTED = 130

FAILED = ATTENTION  # a check or a drill did not pass; a command error the operator can act on
NOT_RUN = BROKEN  # a drill that could not start (nothing was changed)
USAGE = BROKEN  # no command given, or an argument that names nothing
UNREADABLE = BROKEN  # an input file (a LiteLLM config to import) cannot be read at all
# An output file cannot be written (no result at all, like an unreadable input; not ATTENTION, which
# says "written, with parts left out").
UNWRITABLE = BROKEN
