"""The runtime layer: backends that compile a model for a device and the runners that time it.

- backends: onnxruntime, torch (CPU/CUDA, eager/graph), tvm (local/RPC), tensorrt; `get_backend(profile)`
- runner: `Runner`, the compiled model bound to its input, ready to be timed
- measure: the measurement protocol (`measure`, `measure_rounds`)
- tvm: the TVM adapter (ONNX import, compile, export a library, RPC) that latency and export share

Both latency measurement and export build on this layer; it imports nothing above it.
"""
