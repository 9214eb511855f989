"""The values a model's options take, importable without TensorFlow (for command lines and configs alike)."""

#: How the encoder's output becomes the head's input. "token": the class token's output; "gap": the mean of all tokens.
CLASSIFIERS = ("token", "gap")

#: keras.applications' `pooling` for feature extraction: the mean or the maximum of the patch tokens.
POOLINGS = ("avg", "max")

#: Position embeddings of the paper's ablation (appendix D.4, Table 8).
POSITION_EMBEDDINGS = ("none", "learned_1d", "learned_2d", "relative")
