"""Op determinism: the same command on the same machine computes the same weights, bit for bit.

The input pipeline is a function of the seed alone (`pipeline.train_dataset`),
and Keras draws dropout from seeded generators; what is left is the order in
which some kernels sum floats across threads or GPU blocks. `enable` asks
each backend for kernels that keep one order:

- TensorFlow: `tf.config.experimental.enable_op_determinism()` (ops without a
  deterministic kernel then raise instead of running);
- JAX: XLA's `--xla_gpu_deterministic_ops` (its CPU kernels already are), which
  must be in XLA_FLAGS before JAX starts its GPU backend;
- PyTorch: `torch.use_deterministic_algorithms(True)`.

On TensorFlow, Keras compiles no XLA step under op determinism (not every op
has a deterministic XLA kernel): `--jit_compile` and determinism exclude each
other there, and `wanted` settles which one a run gets.
"""

from __future__ import annotations

import os

import keras

JAX_FLAG = "--xla_gpu_deterministic_ops=true"


def wanted(deterministic: bool | None, jit_compile: bool) -> bool:
    """Whether a run gets deterministic kernels: as asked, else (None) unless it asked for XLA on TensorFlow.

    Asked for both on TensorFlow, it gets determinism, and says that XLA is off."""
    xla_on_tensorflow = jit_compile and keras.backend.backend() == "tensorflow"
    if deterministic and xla_on_tensorflow:
        print("--deterministic: Keras compiles no XLA step under TensorFlow's op determinism, so --jit_compile is off "
              "(--no-deterministic keeps XLA).")
    return (not xla_on_tensorflow) if deterministic is None else deterministic


def enable() -> None:
    """Deterministic kernels on the current Keras backend, from here on in this process."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "").split()
        if JAX_FLAG not in flags:
            os.environ["XLA_FLAGS"] = " ".join([*flags, JAX_FLAG])
    elif backend == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for deterministic GEMMs
        torch.use_deterministic_algorithms(True)
