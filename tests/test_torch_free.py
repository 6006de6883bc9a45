"""The runtime never imports torch, not even indirectly."""

from __future__ import annotations

import subprocess
import sys


def test_runtime_modules_do_not_import_torch():
    probe = (
        "import sys, pkgutil, importlib, zsris_rt\n"
        "names = [m.name for m in pkgutil.walk_packages(zsris_rt.__path__, 'zsris_rt.')\n"
        "         if not m.name.startswith('zsris_rt.export')\n"
        "         and not m.name.endswith('.__main__')]\n"  # `python -m` entries run on import
        "for name in names: importlib.import_module(name)\n"
        "assert len(names) > 5, names\n"
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
