"""The gateway's request path, compiled to C with mypyc where a C compiler is found.

Everything else about the package is in pyproject.toml; this file only adds the extension modules:
the modules of `aifabric.native.COMPILED`, which every request runs through. They are plain, fully
typed Python (`mypy --strict`); mypyc turns them into C extensions that run the same code cheaper per
request (docs/performance.md). Their `.py` files stay the source of truth and are installed beside
the extensions. `AIFABRIC_COMPILE=0`, or no C compiler, installs the package interpreted: the same
behaviour, slower.

    pip install .                                   # compiled (mypyc comes with the build requirements)
    python setup.py build_ext --inplace             # `make native`: compile a checkout in place
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent


def _compiled_sources() -> list[str]:
    # native.py prints its list of sources without importing aifabric (nothing is installed yet).
    out = subprocess.run(
        [sys.executable, str(HERE / "src" / "aifabric" / "native.py")],
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def _extensions() -> list[object]:
    if os.environ.get("AIFABRIC_COMPILE", "1") == "0":
        return []
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        print(f"aifabric: no C compiler ({cc}): installing the request path interpreted", file=sys.stderr)
        return []
    from mypyc.build import mypycify

    sources = _compiled_sources()
    print(f"aifabric: compiling the request path with mypyc ({len(sources)} modules)", file=sys.stderr)
    return list(mypycify(sources, opt_level="3", debug_level="0"))


setup(ext_modules=_extensions())
