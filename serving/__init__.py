"""Serving keras_vit models: SavedModel export and a server that speaks TensorFlow Serving's REST and gRPC contract."""

if __name__ == "serving":  # `python -m serving.X` in a checkout: the module runs as a script, once
    from keras_vit.cli import warn_checkout_name

    warn_checkout_name(__name__)
