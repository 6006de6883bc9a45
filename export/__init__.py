"""Export tools: checkpoints → ONNX model packs, and the PyTorch reference of SPEC.md.

Unlike the runtime, this package imports torch.
"""
