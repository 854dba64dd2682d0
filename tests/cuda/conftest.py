"""The CUDA tests run with the simulator's fix-ups (kernels/cuda/simulator.py) applied on import."""
import kernels.cuda  # noqa: F401
