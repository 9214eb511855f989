"""Serving keras_vit models: SavedModel export and a server that speaks TensorFlow Serving's REST and gRPC contract."""

if __name__ == "serving":  # `python -m keras_vit.serving.X` in a checkout: the module runs as a script, once
    import warnings

    warnings.warn(
        "`python -m serving.X` is deprecated and goes in 0.4: the module is keras_vit.serving.X "
        "(`python -m keras_vit.serving.X`, or its keras-vit-* console script).",
        FutureWarning,
        stacklevel=2,
    )
