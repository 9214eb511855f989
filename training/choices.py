"""Names that `keras_vit.training.train` accepts and `keras_vit.training.distribute` acts on, importable without TensorFlow."""

#: `--strategy`: the tf.distribute strategies `distribute.make_strategy` builds.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
