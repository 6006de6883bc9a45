"""Builds the optional C++ mask ops `zsris_rt._maskops` (cpp_ext/); the rest of the package is
declared in pyproject.toml."""

from glob import glob

from setuptools import setup

try:
    from pybind11.setup_helpers import Pybind11Extension, build_ext
except ImportError:  # no pybind11 in the build environment: NumPy twins only
    EXTENSIONS, COMMANDS = [], {}
    print("zsris-rt: pybind11 not found; the C++ mask ops are not built (NumPy twins are used)")
else:
    # optional=True: a failed compile (no compiler) warns and the install goes on without it.
    # -ffp-contract=off: GCC fuses a * b + c into an FMA wherever the target has one (aarch64,
    # -march=native) even under -std=c++17, which changes last bits against the NumPy twins.
    EXTENSIONS = [Pybind11Extension("zsris_rt._maskops", sorted(glob("cpp_ext/*.cpp")),
                                    depends=glob("cpp_ext/*.h"), cxx_std=17,
                                    extra_compile_args=["-O3", "-ffp-contract=off"],
                                    optional=True)]
    COMMANDS = {"build_ext": build_ext}

setup(ext_modules=EXTENSIONS, cmdclass=COMMANDS)
