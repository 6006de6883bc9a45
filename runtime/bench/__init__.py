"""`zsris-rt bench` and the benchmark scripts' shared machinery: machine readings, worker
subprocesses, statistics, FLOPs and compute floors, reports.

Every module here imports without torch; the workers that need it (export, PyTorch reference)
import it inside their function, in a subprocess of their own.
"""
