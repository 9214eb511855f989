"""Names that `training.train` accepts and `training.distribute` acts on, importable without TensorFlow."""

#: `--strategy`: the tf.distribute strategies `distribute.make_strategy` builds.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
