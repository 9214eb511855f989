"""Models of any image size (`dynamic_image_size`): each call against an independent computation.

The independent computation is a static model built at the call's size and
loaded from the same weights, whose position embeddings are resized on load
(the path the reference fixtures check); at the stored size, the reference's
own logits.
"""

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_vit
from harness import random_images
from support import fixture_model

TINY = dict(patch_size=4, hidden_size=32, mlp_dim=64, num_heads=4, num_layers=1, classes=5)


def resized(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return tf.image.resize(images, size).numpy()


def predict(model, images):
    return model.predict(images, verbose=0)


def random_weights(model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.1, v.shape).astype("float32") for v in model.weights])


def test_fixture_at_another_size_equals_the_model_built_there(fixtures_dir):
    inputs = np.load(fixtures_dir / "vit_tiny_token_inputs.npy")
    dynamic = fixture_model(fixtures_dir, "vit_tiny_token", dynamic_image_size=True)
    assert dynamic.input_shape == (None, None, None, 3) and dynamic.image_size == (32, 32)
    np.testing.assert_allclose(predict(dynamic, inputs), np.load(fixtures_dir / "vit_tiny_token_logits.npy"), atol=5e-5)
    big = resized(inputs, (48, 48))
    static = fixture_model(fixtures_dir, "vit_tiny_token", image_size=48)
    np.testing.assert_allclose(predict(dynamic, big), predict(static, big), atol=1e-5)
    np.testing.assert_allclose(dynamic(big, training=False), predict(static, big), atol=1e-5)  # eager too
    # keras.applications' spelling means the same model
    spelled = fixture_model(fixtures_dir, "vit_tiny_token", input_shape=(None, None, 3))  # image_size 32: the file's
    assert spelled.dynamic_image_size and spelled.image_size == (32, 32)
    np.testing.assert_allclose(predict(spelled, big), predict(static, big), atol=1e-5)


def test_hybrid_fixture_at_twice_its_size(fixtures_dir):
    inputs = resized(np.load(fixtures_dir / "hybrid_tiny_inputs.npy"), (128, 128))
    dynamic = fixture_model(fixtures_dir, "hybrid_tiny", dynamic_image_size=True)
    assert dynamic.grid_for((128, 128)) == (16, 16)
    static = fixture_model(fixtures_dir, "hybrid_tiny", image_size=128)
    np.testing.assert_allclose(predict(dynamic, inputs), predict(static, inputs), atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(classifier="gap"),
        dict(position_embedding="learned_2d"),
        dict(position_embedding="none"),
        dict(position_embedding_resize="bilinear"),
    ],
    ids=["gap", "learned_2d", "none", "bilinear"],
)
def test_a_6x4_grid_called_at_8x6_and_4x8(options, tmp_path):
    dynamic = keras_vit.ViT(image_size=(24, 16), dynamic_image_size=True, **TINY, **options)
    random_weights(dynamic)
    dynamic.save_weights(tmp_path / "dynamic.weights.h5")
    for size in [(32, 24), (16, 32)]:
        images = random_images((2, *size, 3))
        static = keras_vit.ViT(image_size=size, weights=str(tmp_path / "dynamic.weights.h5"), **TINY, **options)
        np.testing.assert_allclose(predict(dynamic, images), predict(static, images), atol=1e-5)


def test_at_the_stored_size_the_table_is_used_as_stored():
    dynamic = keras_vit.ViT(image_size=(24, 16), dynamic_image_size=True, **TINY)
    random_weights(dynamic)
    static = keras_vit.ViT(image_size=(24, 16), **TINY)
    static.set_weights(dynamic.get_weights())
    images = random_images((2, 24, 16, 3))
    known = tf.function(lambda x: dynamic(x, training=False)).get_concrete_function(tf.TensorSpec([None, 24, 16, 3]))
    assert not {"OneHot", "Einsum"} & {op.type for op in known.graph.get_operations()}  # no resize in the graph
    unknown = tf.function(lambda x: dynamic(x, training=False), input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_array_equal(unknown(images).numpy(), known(images).numpy())  # an identity resize, exactly
    np.testing.assert_allclose(known(images).numpy(), predict(static, images), atol=1e-6)


def test_sizes_that_do_not_divide_by_the_stride():
    model = keras_vit.ViT(image_size=16, dynamic_image_size=True, **TINY)
    with pytest.raises(ValueError, match=r"Image size \(18, 16\) .* does not divide by the patch stride \(4, 4\)"):
        model(random_images((1, 18, 16, 3)))
    with pytest.raises(ValueError, match=r"\(18, 16\).*patch stride \(4, 4\)"):
        model.grid_for((18, 16))
    graph = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not divide by the patch stride"):
        graph(random_images((1, 18, 16, 3)))
    compiled = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3])], jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError):  # XLA drops assertions; the patch reshape fails instead
        compiled(random_images((1, 18, 16, 3)))

    padded = keras_vit.ViT(image_size=16, dynamic_image_size=True, dynamic_image_pad=True, **TINY)
    random_weights(padded)
    images = random_images((2, 18, 13, 3))
    assert padded.grid_for((18, 13)) == (5, 4)
    zero_padded = np.pad(images, [(0, 0), (0, 2), (0, 3), (0, 0)])
    np.testing.assert_allclose(predict(padded, images), predict(padded, zero_padded), atol=1e-6)


def test_options_that_cannot_be_dynamic_are_refused():
    with pytest.raises(ValueError, match="relative.*raster offset"):
        keras_vit.ViT(image_size=16, dynamic_image_size=True, position_embedding="relative", **TINY)
    with pytest.raises(ValueError, match="dynamic_image_pad=True .* needs dynamic_image_size=True"):
        keras_vit.ViT(image_size=16, dynamic_image_pad=True, **TINY)
    static = keras_vit.ViT(image_size=16, **TINY)
    with pytest.raises(ValueError, match="takes 16x16 images, got 32x32: build it with dynamic_image_size=True"):
        static.grid_for(32)
    with pytest.raises(ValueError, match="input_shape must be"):
        keras_vit.ViT(input_shape=(None, 16, 3), **TINY)


def test_keras_file_round_trip(tmp_path):
    model = keras_vit.ViT(image_size=16, dynamic_image_size=True, dynamic_image_pad=True, **TINY)
    random_weights(model)
    model.save(tmp_path / "dynamic.keras")
    loaded = keras.saving.load_model(tmp_path / "dynamic.keras", safe_mode=True)
    assert loaded.dynamic_image_size and loaded.dynamic_image_pad and loaded.get_config() == model.get_config()
    for size in [(16, 16), (24, 32), (18, 13)]:
        images = random_images((2, *size, 3))
        np.testing.assert_allclose(predict(loaded, images), predict(model, images), atol=1e-6)


def test_looking_inside_at_another_size():
    model = keras_vit.ViT(image_size=16, dynamic_image_size=True, classifier="token", **{**TINY, "num_layers": 2})
    random_weights(model)
    images = random_images((2, 24, 32, 3))
    assert model.features(images).shape == (2, 1 + 6 * 8, 32)
    assert [x.shape for x in model.intermediates(images, norm=True)] == [(2, 49, 32)] * 2
    assert model.representation(images).shape == (2, 32)
    assert [m.shape for m in model.attention_maps(images, blocks=[-1])] == [(2, 4, 49, 49)]
    assert keras_vit.analysis.attention_rollout(model, images).shape == (2, 6, 8)
    # the mean distance at 24x32 reads the 6x8 grid: equal to the same computation by hand
    distances = keras_vit.analysis.patch_distances((6, 8), model.patch_stride)
    by_hand = keras_vit.analysis.attention_distance(model.attention_maps(images), distances) / (2 * 48)
    np.testing.assert_allclose(keras_vit.analysis.mean_attention_distance(model, images), by_hand, rtol=1e-6)
    with pytest.raises(ValueError, match="dynamic_image_size=True: `encode` takes flat patch embeddings"):
        model.encode(model.embed_patches(images))


def test_the_analyses_open_a_keras_file_at_another_size(tmp_path):
    """`analysis ... --image_size` on a .keras file: the model built there, position embeddings resized as on load,
    which for a dynamic model is what it computes when called at that size."""
    from keras_vit.models.opening import open_model

    model = keras_vit.ViT(image_size=16, dynamic_image_size=True, **TINY)
    random_weights(model)
    model.save(tmp_path / "dynamic.keras")
    opened = open_model(tmp_path / "dynamic.keras", image_size=(24, 32))
    assert opened.image_size == (24, 32)
    images = random_images((2, 24, 32, 3))
    np.testing.assert_allclose(predict(opened, images), predict(model, images), atol=1e-6)
    keras_vit.MaskedPatchPrediction(keras_vit.ViT(image_size=16, include_top=False, **TINY)).save(tmp_path / "mpp.keras")
    with pytest.raises(ValueError, match="holds a MaskedPatchPrediction; another image size applies to a VisionTransformer"):
        open_model(tmp_path / "mpp.keras", image_size=24)


def mixed_sizes(batches: int = 9) -> tf.data.Dataset:
    """Batches of 8 at 32x32, 48x48 and 40x56 pixels; the label is whether the red channel was brightened."""
    sizes = [(32, 32), (48, 48), (40, 56)]

    def generate():
        rng = np.random.default_rng(0)
        for i in range(batches):
            labels = np.arange(8) % 2
            images = rng.uniform(0, 1, (8, *sizes[i % 3], 3)).astype("float32")
            images[..., 0] += labels[:, None, None]
            yield images, np.eye(2, dtype="float32")[labels]

    spec = (tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, 2]))
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


@pytest.mark.parametrize("mode", ["xla", "graph", "mirrored"])
def test_fit_on_batches_of_several_sizes(mode):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"]) if mode == "mirrored" else tf.distribute.get_strategy()
    with strategy.scope():
        model = keras_vit.ViT(image_size=32, dynamic_image_size=True, **{**TINY, "patch_size": 8, "classes": 2})
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            jit_compile=mode == "xla",
        )
    history = model.fit(mixed_sizes().repeat(), steps_per_epoch=9, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses


# --- Export and serving -------------------------------------------------------------------------


def served_model() -> keras.Model:
    model = keras_vit.ViT(image_size=16, dynamic_image_size=True, **{**TINY, "classes": 3})
    random_weights(model, seed=3)
    return model


def probabilities(model, pixels: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.softmax(predict(model, pixels.astype("float32") / 127.5 - 1.0), axis=-1))


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    from keras_vit.serving import saved_model

    base = tmp_path_factory.mktemp("dynamic") / "vit"
    model = served_model()
    saved_model.export(model, str(base))
    saved_model.export(model, str(base), format="tflite", serving_image_size=(24, 32))
    return model, base


def pixels(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3)).astype(np.uint8)


@pytest.mark.process
def test_export_keeps_the_dynamic_size(dynamic_export):
    from keras_vit.serving import saved_model
    from keras_vit.serving.servable import Servable, ServingOptions

    model, base = dynamic_export
    servable = Servable("vit", 1, str(base / "1"))
    shape = [d.size for d in servable.signature_defs["predict_pixels"].inputs["pixels"].tensor_shape.dim]
    assert shape == [-1, -1, -1, 3]
    for size in [(16, 16), (24, 32)]:
        batch = pixels(2, size)
        got = servable.predict("predict_pixels", {"pixels": batch.astype("float32")})["probabilities"]
        np.testing.assert_allclose(got, probabilities(model, batch), atol=1e-5)
    # serving_default decodes to image_size (16x16) by default, to --serving_image_size in version 2
    photo = pixels(1, (40, 56), seed=1)
    encoded = np.array([saved_model.encode_png(photo[0])], dtype=object)
    for version, size in [(1, (16, 16)), (2, (24, 32))]:
        got = Servable("vit", version, str(base / str(version))).predict("", {"images": encoded})["probabilities"]
        np.testing.assert_allclose(got, probabilities(model, resized(photo.astype("float32"), size)), atol=1e-4)
    with pytest.raises(ValueError, match=r"does not divide by the patch stride"):
        saved_model.export(model, str(base), serving_image_size=(18, 16))


@pytest.mark.process
def test_litert_takes_the_serving_size_only(dynamic_export):
    from keras_vit.serving.errors import ServingError
    from keras_vit.serving.servable import Servable, ServingOptions

    model, base = dynamic_export
    lite = Servable("vit", 2, str(base / "2"), ServingOptions(prefer_tflite=True))
    batch = pixels(2, (24, 32))
    got = lite.predict("predict_pixels", {"pixels": batch.astype("float32")})["probabilities"]
    np.testing.assert_allclose(got, probabilities(model, batch), atol=1e-5)
    with pytest.raises(ServingError, match=r"Input pixels: expecting shape \[-1,24,32,3\] but got: \[1,16,16,3\]"):
        lite.predict("predict_pixels", {"pixels": pixels(1, (16, 16)).astype("float32")})
    advertised = lite.signature_defs["predict_pixels"].inputs["pixels"].tensor_shape.dim  # what the metadata says
    assert [d.size for d in advertised] == [-1, 24, 32, 3]
    saved_model_graph = Servable("vit", 2, str(base / "2")).signature_defs["predict_pixels"].inputs["pixels"]
    assert [d.size for d in saved_model_graph.tensor_shape.dim] == [-1, -1, -1, 3]


@pytest.mark.process
def test_a_real_server_answers_at_two_sizes_over_rest_and_grpc(dynamic_export):
    import concurrent.futures
    import json
    import subprocess
    import sys
    import urllib.request

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from keras_vit.serving.client import RestClient
    from support import REPO, env, free_port

    model, base = dynamic_export  # the server serves the latest version, 2: its SavedModel takes any size too
    rest_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "keras_vit.serving.server", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
         "--model_name", "vit", "--model_base_path", str(base), "--enable_batching", "--file_system_poll_wait_seconds", "0"],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{rest_port}"
        RestClient(url, "vit").wait_until_available(process=server)

        def rest(batch: np.ndarray) -> tuple[int, dict]:
            body = json.dumps({"signature_name": "predict_pixels", "instances": batch.astype(float).tolist()}).encode()
            request = urllib.request.Request(f"{url}/v1/models/vit:predict", data=body)
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        # Concurrent requests at two sizes: the batcher merges each size with its own kind only.
        batches = [pixels(2, (16, 16), seed=i) if i % 2 else pixels(1, (24, 32), seed=i) for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(rest, batches))
        for batch, (status, body) in zip(batches, answers):
            assert status == 200, body
            np.testing.assert_allclose([p["probabilities"] for p in body["predictions"]], probabilities(model, batch), atol=1e-5)
        for size in [(16, 16), (24, 32)]:
            batch = pixels(2, size, seed=9)
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.signature_name = "vit", "predict_pixels"
            request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(batch.astype("float32")))
            reply = stub.Predict(request, timeout=60)
            np.testing.assert_allclose(tf.make_ndarray(reply.outputs["probabilities"]), probabilities(model, batch), atol=1e-5)
        status, body = rest(pixels(1, (18, 16)))
        assert status == 400 and "does not divide by the patch stride" in body["error"], body
        assert rest(pixels(1, (24, 32)))[0] == 200  # still serving
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_batcher_merges_requests_of_one_size_only():
    import concurrent.futures

    from keras_vit.serving.batching import Batcher, BatchingOptions

    calls = []

    def run(inputs):  # a pixels signature that answers each image's mean
        calls.append(inputs["pixels"].shape)
        return {"mean": inputs["pixels"].mean(axis=(1, 2, 3))}

    batcher = Batcher(run, BatchingOptions(max_batch_size=64, batch_timeout_micros=200_000, num_batch_threads=1))
    requests = [np.full((1, *((8, 8) if i % 2 else (12, 4)), 3), i, np.float32) for i in range(12)]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda r: batcher.submit({"pixels": r}), requests))
    batcher.close()
    assert [float(a["mean"][0]) for a in answers] == list(range(12))
    assert len(calls) < len(requests)  # merged
    assert sum(shape[0] for shape in calls) == len(requests)  # and never run twice (no failed concatenation)


@pytest.mark.process
def test_train_evaluate_and_export_a_dynamic_model_from_the_command_line(tmp_path, capsys):
    import json

    from keras_vit.serving import export
    from keras_vit.training import datasets, evaluate
    from support import TINY_MODEL, run_module

    out = tmp_path / "run"
    result = run_module("keras_vit.training.train", *TINY_MODEL, "--dynamic_image_size", "--dataset", "digits", "--epochs", "3",
                        "--batch_size", "32", "--learning_rate", "3e-3", "--warmup_steps", "20", "--strategy", "one_device",
                        "--output_dir", str(out), "--progress", "0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = keras_vit.load_model(out / "model.keras")
    assert model.dynamic_image_size and model.image_size == (16, 16)

    # The commands' own main(), in this process (TensorFlow is started already).
    assert evaluate.main(["--model", str(out / "model.keras"), "--dataset", "digits", "--image_size", "24", "32",
                          "--output", str(tmp_path / "eval.json")]) == 0
    assert "digits/test at 24x32: accuracy" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["image_size"] == [24, 32]
    digits = datasets.describe("digits")
    at_16 = evaluate.evaluate(model, digits, "test")
    assert abs(at_16["accuracy"] - json.loads((out / "results.json").read_text())["accuracy"]) < 1e-6
    at_24x32 = evaluate.evaluate(model, digits, "test", image_size=(24, 32))
    assert abs(evaluated["accuracy"] - at_24x32["accuracy"]) < 1e-6 and at_24x32["loss"] != at_16["loss"]

    assert export.main(["--model", str(out / "model.keras"), "--model_base_path", str(tmp_path / "m"),
                        "--format", "tflite", "--serving_image_size", "24"]) == 0
    assert ("predict_pixels takes pixels of any size that divides by the patch stride 4x4; serving_default decodes "
            "images to 24x24; model.tflite takes 24x24 only (LiteRT runs one fixed size)") in capsys.readouterr().out

    # Fine-tuned from it at another size, the model takes any size too, and the run says so, and which head it took.
    tuned = run_module("keras_vit.training.train", "--model", "ViT", "--init_from", str(out / "model.keras"),
                       "--recipe", "finetune", "--image_size", "24", "--dataset", "digits", "--epochs", "1",
                       "--steps_per_epoch", "2", "--batch_size", "8", "--output_dir", str(tmp_path / "tuned"),
                       "--progress", "0")
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    assert "model.keras takes images of any size: so does the model trained from it." in tuned.stdout
    assert ("with a new zero-initialised head of 10 classes (head policy 'new': the finetune recipe's default)"
            in tuned.stdout)
    model = keras_vit.load_model(tmp_path / "tuned" / "model.keras")
    assert model.dynamic_image_size and model.image_size == (24, 24)
