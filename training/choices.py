"""Names that `training.train` accepts and the library acts on, importable without TensorFlow."""

#: `--strategy`: the tf.distribute strategies `distribute.make_strategy` builds.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")

#: `--precision`: Keras dtype policies (mixed_float16 trains with loss scaling).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
