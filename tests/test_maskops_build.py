"""The optional C++ build must not fail quietly: where a compiler exists, the extension is built
and is not older than its sources. (Otherwise a broken build only shows as skipped tests.)"""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[1] / "cpp_ext"


def compiler() -> str | None:
    command = (sysconfig.get_config_var("CXX") or "c++").split()
    return shutil.which(command[0]) if command else None


def test_extension_is_built_where_a_compiler_exists() -> None:
    if compiler() is None:
        pytest.skip("no C++ compiler here: the NumPy twins run, by design")
    try:
        from zsris_rt import _maskops
    except ImportError as exc:
        pytest.fail(f"a C++ compiler exists but zsris_rt._maskops is not built ({exc}): "
                    "run `pip install -e .` and read its build output")
    library = Path(_maskops.__file__)
    if library.parent != SOURCES.parent / "runtime":
        return  # an installed copy: its sources are not beside it to compare with
    stale = [p.name for p in sorted(SOURCES.glob("*.[ch]*"))
             if p.suffix in (".cpp", ".h") and p.stat().st_mtime > library.stat().st_mtime]
    assert not stale, (f"{library.name} is older than {', '.join(stale)}: the last build failed "
                       "or did not run (pip install -e . hides a failed optional build)")
