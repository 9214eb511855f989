"""Names that `keras_vit.training.train` accepts and `keras_vit.training` acts on, importable without TensorFlow."""

#: `--strategy`: the tf.distribute strategies `distribute.make_strategy` builds.
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")

#: The training crops of `pipeline.Preprocessing` (its docstring says what each does).
TRAIN_CROPS = ("inception", "random", "resize")
