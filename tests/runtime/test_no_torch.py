"""The tier's own claims: nothing of the runtime loads torch (in fresh processes, where torch may
well be installed: spaCy's thinc would import it if the runtime did not hide it), the conftests
import nothing heavy, and every runtime module is exercised by some test of this tier."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import zsris_rt

from .conftest import EXAMPLES, HERE, ROOT

TORCH_CHECK = (
    "loaded = sorted(m for m, v in sys.modules.items()\n"
    "                if (m == 'torch' or m.startswith('torch.')) and v is not None)\n"
    "assert not loaded, loaded[:5]\n"
)


def runtime_modules() -> list[str]:
    """Every Python module of the runtime (not the export tools, not the C++ extension, not
    `python -m` entries, which run the command on import)."""
    return sorted(m.name for m in pkgutil.walk_packages(zsris_rt.__path__, "zsris_rt.")
                  if not m.name.startswith("zsris_rt.export") and m.name != "zsris_rt._maskops"
                  and not m.name.endswith(".__main__"))


def python(code: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_importing_every_runtime_module_loads_no_torch():
    names = runtime_modules()
    assert len(names) > 60 and "zsris_rt.commands.main" in names
    probe = ("import importlib, json, sys\n"
             f"for name in {names!r}: importlib.import_module(name)\n"
             + TORCH_CHECK +
             "print(json.dumps(sorted(m for m in sys.modules\n"
             "                        if m.startswith('zsris_rt.export'))))\n")
    done = python(probe)
    assert done.returncode == 0, done.stderr[-2000:]
    # Only the export package's torch-free corner (the bench names its random packs by it).
    assert json.loads(done.stdout) == ["zsris_rt.export", "zsris_rt.export.choices"]


def test_a_query_end_to_end_loads_no_torch():
    """The main command on the demo pack, proposer included, then what the process holds."""
    probe = ("import contextlib, io, json, sys\n"
             "from zsris_rt.commands.main import main\n"
             "out = io.StringIO()\n"
             "with contextlib.redirect_stdout(out):\n"
             f"    code = main([{str(EXAMPLES / 'scene-1.png')!r}, 'the green circle', '--json'])\n"
             "assert code == 0, code\n"
             "assert json.loads(out.getvalue())['results'][0]['noun_phrase'] == "
             "'the green circle'\n"
             "import zsris_rt, zsris_rt.segmenter, zsris_rt.commands.eval, zsris_rt.agreement\n"
             + TORCH_CHECK + "print('ok')\n")
    done = python(probe)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_conftests_import_nothing_heavy():
    probe = ("import importlib.util, sys\n"
             f"for path in [{str(ROOT / 'tests' / 'conftest.py')!r}, "
             f"{str(HERE / 'conftest.py')!r}]:\n"
             "    spec = importlib.util.spec_from_file_location('probe_conftest', path)\n"
             "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
             + TORCH_CHECK +
             "assert not [m for m in sys.modules if m.startswith('zsris_rt.export')]\n")
    done = python(probe, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


# Modules this tier does not import by name, and why.
NOT_NAMED = {
    "zsris_rt.bench.runtime_side": "runs inside the bench's worker processes, which "
                                   "test_other_commands' bench smoke starts",
}


def test_every_runtime_module_is_exercised_by_this_tier():
    """Each runtime module is named (zsris_rt.x.y, or imported as `from zsris_rt.x import y`)
    in some test of the tier, so a new module without a torch-free test fails here."""
    sources = "\n".join(p.read_text() for p in HERE.glob("*.py"))
    missing = []
    for name in runtime_modules():
        package, _, leaf = name.rpartition(".")
        named = name in sources or (f"from {package} import" in sources and
                                    _imported(sources, package, leaf))
        if not named and name not in NOT_NAMED:
            missing.append(name)
    assert not missing, missing


def _imported(sources: str, package: str, leaf: str) -> bool:
    """`leaf` appears in a `from package import ...` statement (one line or parenthesised)."""
    start = 0
    needle = f"from {package} import"
    while (at := sources.find(needle, start)) >= 0:
        end = sources.find(")", at) if sources[at + len(needle):].lstrip().startswith("(") \
            else sources.find("\n", at)
        names = sources[at + len(needle):end].replace("(", " ").replace(",", " ").split()
        if leaf in names:
            return True
        start = at + 1
    return False
