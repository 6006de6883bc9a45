"""`zsris-rt bench` and the benchmark scripts' shared machinery: machine readings, worker
subprocesses, statistics, FLOPs and compute floors, reports.

Nothing here imports torch: the workers that need it (export, PyTorch reference) live in
zsris_rt.export.bench_workers and run in a subprocess of their own.
"""
