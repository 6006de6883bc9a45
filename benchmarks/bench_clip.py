#!/usr/bin/env python
"""Benchmark zsris-rt (ONNX Runtime, CPU) against the PyTorch reference on CLIP ViT-B/32 geometry,
random weights, K given masks, no proposer: `zsris-rt bench --proposer none --ks 8,32` with the
work folder of the earlier runs. Every option of `zsris-rt bench --help` applies.

    python benchmarks/bench_clip.py                     # ViT-B/32, K = 8 and 32, 10 runs each
    python benchmarks/bench_clip.py --smoke             # tiny geometry, K = 2: seconds
    python benchmarks/bench_clip.py --json out.json --runs 20
"""

from __future__ import annotations

import sys

from zsris_rt.commands.main import main

DEFAULTS = ["--proposer", "none", "--ks", "8,32", "--work", "/tmp/zsris-bench"]

if __name__ == "__main__":
    sys.exit(main(["bench", *DEFAULTS, *sys.argv[1:]]))  # later options win
