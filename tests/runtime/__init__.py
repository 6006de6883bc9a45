"""The torch-free tier (`python -m pytest tests/runtime`): the runtime against the committed demo
pack and a fake backend, with nothing from PyTorch installed or imported.

A package on purpose: without this file pytest would import tests/runtime/conftest.py under the
module name `conftest` too, and the suite's `from conftest import ...` (tests/conftest.py's
helpers) would then find this tier's conftest instead.
"""
