"""The serving contract, written once: signature, input and output names, and the method of our exports.

`keras_vit.serving.export` writes these, `keras_vit.serving.server` serves them, the clients,
tests and benchmarks send and read them.
"""

#: The signature TF Serving uses when a request names none: encoded images in.
DEFAULT_SIGNATURE = "serving_default"
#: Raw pixels in: float32 [N, H, W, 3] in [0, 255] at the model's size.
PIXELS_SIGNATURE = "predict_pixels"
#: The input of DEFAULT_SIGNATURE: DT_STRING [N] of encoded JPEG/PNG/GIF/BMP images.
IMAGES_INPUT = "images"
#: The input of PIXELS_SIGNATURE.
PIXELS_INPUT = "pixels"

#: Outputs of a classifier: [N, classes] probabilities, top-k class indices and scores, and their labels.
PROBABILITIES = "probabilities"
CLASSES = "classes"
SCORES = "scores"
LABELS = "labels"
#: The output of a model exported with include_top=False: its representation [N, D].
FEATURES = "features"

#: The LiteRT model of a version exported with `--format tflite|tflite_int8`: TF Serving's name for it
#: (`--prefer_tflite_model`). It holds PIXELS_SIGNATURE only.
TFLITE_FILE = "model.tflite"

#: The OpenVINO IR of a version exported with `--format openvino` (`--prefer_openvino_model`): this folder holds
#: PIXELS_SIGNATURE's computation (`keras_vit.serving.openvino_model`).
OPENVINO_DIR = "openvino"

#: The method name of every signature we export.
PREDICT_METHOD = "tensorflow/serving/predict"
