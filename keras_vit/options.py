"""The values a model's options take, importable without TensorFlow (for command lines and configs alike)."""

from keras_vit.position_embeddings import KINDS

#: The `VisionTransformer` arguments that make an architecture: what a variant fixes and a weights file records.
ARCHITECTURE = ("patch_size", "hidden_size", "mlp_dim", "num_heads", "num_layers", "resnet_layers", "resnet_width")

#: `VisionTransformer` options that any architecture, a variant's too, may change, and that a weights file records.
MODEL_OPTIONS = ("classifier", "representation_size", "position_embedding", "position_embedding_placement")

#: `VisionTransformer` options in which the checkpoints of other libraries differ from the reference's: the
#: LayerNorm epsilon (HF: 1e-12), the exact GELU (timm, HF), timm's `fc_norm` (the final LayerNorm after average
#: pooling), DeiT's distillation token, and the pixel statistics of the training images (DeiT's and many timm
#: checkpoints': ImageNet's). A weights file records them; they are not training flags.
CONVENTIONS = ("layer_norm_epsilon", "approximate_gelu", "fc_norm", "distillation_token", "pixel_mean", "pixel_std")

#: How the encoder's output becomes the head's input. "token": the class token's output; "gap": the mean of all tokens.
CLASSIFIERS = ("token", "gap")

#: keras.applications' `pooling` for feature extraction: the mean or the maximum of the patch tokens.
POOLINGS = ("avg", "max")

#: Position embeddings of the paper's ablation (appendix D.4, Table 8): `keras_vit.position_embeddings.KINDS`.
POSITION_EMBEDDINGS = tuple(KINDS)

#: Where learned position embeddings are added (appendix D.4, Table 8): at the input, before every block with a
#: table of its own, or before every block with one shared table.
POSITION_EMBEDDING_PLACEMENTS = ("input", "every_layer", "every_layer_shared")

#: Keras dtype policies a model trains or is exported with. The mixed ones keep float32 variables and compute in
#: bfloat16 (fast where the CPU has AVX512_BF16 or AMX, and on TPUs and recent GPUs) or float16 (GPUs).
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")

#: What `keras_vit.serving.export --format` writes into a version's folder. "saved_model": the SavedModel alone;
#: "tflite" and "tflite_int8" add `model.tflite` beside it (float32, or int8 weights with activations quantized at run
#: time), run by LiteRT's XNNPACK kernels under `keras_vit.serving.server --prefer_tflite_model`.
#: "openvino" adds an OpenVINO IR (`openvino/`), run by `keras_vit.serving.server --prefer_openvino_model` in one of
#: `OPENVINO_PRECISIONS`: float32, bfloat16 (a CPU with AVX512_BF16 or AMX) or int8 (NNCF's post-training quantization).
#: "auto" exports each that this CPU runs, keeps those that pass the int8 agreement gate, and writes the fastest.
EXPORT_FORMATS = ("saved_model", "tflite", "tflite_int8", "openvino", "auto")
OPENVINO_PRECISIONS = ("f32", "bf16", "int8")

#: The fine-tuning head policies of `keras_vit.load_weights(..., head=)`. "new": the model keeps its own
#: zero-initialised head whatever the source holds (the paper's fine-tuning, section 3.2, and the reference's
#: `load_pretrained`); "keep": the stored head is loaded and must fit; "auto": the stored head is loaded when it fits
#: the model's classes (inference with a checkpoint on its own task), else the head starts new.
HEAD_POLICIES = ("auto", "new", "keep")
