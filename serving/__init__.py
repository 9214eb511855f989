"""Serving keras_vit models: SavedModel export and a server that speaks TensorFlow Serving's REST and gRPC contract."""

if __name__ == "serving":  # a checkout's short name: the same module objects as keras_vit.serving (keras_vit._aliases)
    from keras_vit._aliases import alias_package

    alias_package(__name__, "keras_vit.serving")
