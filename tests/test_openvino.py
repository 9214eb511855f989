"""keras_vit.serving.export --format openvino: an OpenVINO IR beside the SavedModel, served with the same contract."""

import collections
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import keras_vit
from harness import randomize_at_trained_scale
from test_export_flavours import build
from keras_vit.serving import openvino_model, saved_model, signatures
from keras_vit.serving.servable import Servable, ServingOptions
from support import REPO, env, free_port
from test_tflite import serve_and_compare

pytestmark = pytest.mark.process  # the second tier: run with --all_tiers

OPTIONS = dict(image_size=32, patch_size=8, hidden_size=64, mlp_dim=128, num_heads=4, num_layers=2, classes=10)
LABELS = [f"class {i}" for i in range(10)]
PRECISIONS = ["f32", "int8"] + (["bf16"] if openvino_model.native_bf16() else [])


def layer_norms(model: keras_vit.VisionTransformer) -> int:
    """How many LayerNormalization layers the model runs: two per block and the encoder's last."""
    return 2 * len(model.encoder_blocks) + (model.encoder_norm is not None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One model exported in each precision this CPU runs: versions 1, 2 (and 3)."""
    base = tmp_path_factory.mktemp("openvino") / "vit"
    model = build(OPTIONS, seed=5)
    return base, {p: saved_model.export(model, str(base), labels=LABELS, format="openvino", precision=p)
                  for p in PRECISIONS}


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(11)
    pixels = rng.uniform(0, 255, (24, 32, 32, 3)).astype("float32")
    photos = rng.integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)  # another size: the SavedModel's decode resizes
    return pixels, np.array([saved_model.encode_png(p) for p in photos], dtype=object)


@pytest.mark.parametrize("precision, probability_atol, min_agreement", [("f32", 1e-5, 1.0), ("bf16", 0.01, 0.9),
                                                                         ("int8", 0.05, 0.9)])
def test_openvino_serves_the_saved_models_contract(exported, inputs, precision, probability_atol, min_agreement):
    if precision not in PRECISIONS:
        pytest.skip("this CPU has no native bfloat16: the export refuses bf16 here")
    _, paths = exported
    graph = Servable("vit", 1, paths[precision])
    served = Servable("vit", 1, paths[precision], ServingOptions(prefer_openvino=True))
    assert served.runtime == "OpenVINO" and served.engine.precision == precision
    pixels, images = inputs
    for name, feed in ((signatures.PIXELS_SIGNATURE, {signatures.PIXELS_INPUT: pixels}),
                       ("", {signatures.IMAGES_INPUT: images})):
        want, got = graph.predict(name, feed), served.predict(name, feed)
        assert set(got) == set(want) == {signatures.PROBABILITIES, signatures.CLASSES, signatures.SCORES,
                                         signatures.LABELS}
        np.testing.assert_allclose(got[signatures.PROBABILITIES], want[signatures.PROBABILITIES], atol=probability_atol)
        agreement = np.mean(got[signatures.CLASSES][:, 0] == want[signatures.CLASSES][:, 0])
        assert agreement >= min_agreement, (name, agreement)
        assert [list(row) for row in got[signatures.LABELS]] == [[LABELS[i].encode() for i in row]
                                                                for row in got[signatures.CLASSES]]


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_each_keras_layer_norm_becomes_one_mvn_with_the_same_outputs(classifier):
    import openvino as ov
    import tensorflow as tf

    from keras_vit.serving.openvino_fusion import fuse_layer_normalization

    model = keras_vit.ViT(**OPTIONS, classifier=classifier)
    randomize_at_trained_scale(model, seed=3)  # layer norms' scales and shifts far from 1 and 0
    size = OPTIONS["image_size"]
    logits = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, size, size, 3])])
    keras_form = ov.convert_model(logits.get_concrete_function())
    fused = keras_form.clone()
    norms = layer_norms(model)
    assert fuse_layer_normalization(fused) == norms
    ops = collections.Counter(op.get_type_name() for op in fused.get_ordered_ops())
    assert ops["MVN"] == norms and not ops["SquaredDifference"]
    x = np.random.default_rng(4).normal(0, 1, (4, size, size, 3)).astype("float32")
    run = {name: ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
           for name, m in (("keras form", keras_form), ("fused", fused))}
    want = np.asarray(model(x, training=False))
    for name, compiled in run.items():
        np.testing.assert_allclose(compiled(x)[0], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_the_exported_ir_holds_the_fused_layer_norms(exported):
    import openvino as ov

    _, paths = exported
    model = build(OPTIONS, seed=5)
    ir = ov.Core().read_model(os.path.join(paths["f32"], signatures.OPENVINO_DIR, openvino_model.MODEL_FILE))
    ops = collections.Counter(op.get_type_name() for op in ir.get_ordered_ops())
    assert ops["MVN"] == layer_norms(model) and not ops["SquaredDifference"]


def test_the_server_runs_the_openvino_model_over_rest_and_grpc_with_batching(exported, inputs):
    """With the plugin config of a latency-first deployment: one stream for the batches, every core on each."""
    base, paths = exported
    newest = max(int(os.path.basename(p)) for p in paths.values())
    want = Servable("vit", newest, paths[PRECISIONS[-1]], ServingOptions(prefer_openvino=True)).predict(
        "", {signatures.IMAGES_INPUT: inputs[1]})
    serve_and_compare(base, ["--prefer_openvino_model", "--openvino_plugin_config", '{"PERFORMANCE_HINT": "LATENCY"}'],
                      inputs[1], want, f"Loaded vit version {newest} (openvino/, run by OpenVINO), 1 stream")


@pytest.mark.parametrize("text, message", [
    ("LATENCY", "--openvino_plugin_config is not JSON (Expecting value"),
    ('["LATENCY"]', "give a JSON object of OpenVINO CPU properties"),
    ('{"PERFORMANCE_HINTS": "LATENCY"}', "PERFORMANCE_HINTS is not a property of OpenVINO's CPU plugin one can set; "
                                         "those are "),
    ('{"PERFORMANCE_HINT": "FAST"}', "OpenVINO refuses it: Wrong value FAST"),
    ('{"INFERENCE_PRECISION_HINT": "bf16"}', "INFERENCE_PRECISION_HINT is the export's --precision"),
])
def test_a_plugin_config_openvino_would_refuse_is_refused_naming_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        openvino_model.plugin_config(text)


def test_a_plugin_config_without_the_openvino_models_is_refused():
    from keras_vit.serving import server

    args = server.parser().parse_args(["--model_base_path", "models", "--openvino_plugin_config", "{}"])
    with pytest.raises(ValueError, match="configures the OpenVINO IRs --prefer_openvino_model runs: give that flag"):
        server.build_manager(args)


def test_the_server_refuses_a_bad_plugin_config_before_it_listens():
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "keras_vit.serving.server", "--port", "0", "--rest_api_port", str(port),
                           "--model_base_path", str(REPO / "no-such-models"), "--prefer_openvino_model",
                           "--openvino_plugin_config", '{"NUM_STREAMS": "x"}'], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-2000:]  # OpenVINO's own words follow: "Could not read number of streams ..."
    assert errors[0].startswith('error: --openvino_plugin_config {"NUM_STREAMS": "x"}: OpenVINO refuses it: ')
    assert "streams" in errors[0]


def test_precision_belongs_to_the_openvino_format(tmp_path):
    with pytest.raises(ValueError, match="--precision chooses the OpenVINO model's precision; --format tflite"):
        saved_model.export(build(OPTIONS, seed=5), str(tmp_path / "vit"), format="tflite", precision="int8")


def test_format_auto_writes_the_fastest_format_that_passes_and_prints_its_table(tmp_path, capsys):
    from keras_vit.serving import export

    model = build(OPTIONS, seed=5)
    model.save(tmp_path / "model.keras")
    assert export.main(["--model", str(tmp_path / "model.keras"), "--model_base_path", str(tmp_path / "vit"),
                        "--format", "auto"]) == 0
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")][1:]
    rows = {line.split("|")[1].strip(): line for line in table}
    assert set(rows) == {"saved_model", "tflite", "tflite_int8", "openvino f32", "openvino bf16", "openvino int8"}
    chosen = printed.split("--format auto chose ")[1].split(":")[0]
    speeds = {name: float(line.split("|")[2]) for name, line in rows.items() if line.split("|")[2].strip()}
    assert chosen == max(speeds, key=speeds.get)  # every candidate that ran passed here: the fastest is chosen
    version = tmp_path / "vit" / "1"
    assert sorted(p.name for p in (tmp_path / "vit").iterdir() if p.name.isdigit()) == ["1"]  # no trial left behind
    assert not [p for p in (tmp_path / "vit").iterdir() if p.name.startswith(".")]
    runtime = {"tflite": "LiteRT", "tflite_int8": "LiteRT"}.get(chosen, "OpenVINO" if "openvino" in chosen else "TF")
    served = Servable("vit", 1, str(version), ServingOptions(prefer_tflite=True, prefer_openvino=True))
    assert served.runtime == runtime


@pytest.mark.parametrize("plugin_config, streams", [(None, min(2, os.cpu_count())), ({"PERFORMANCE_HINT": "LATENCY"}, 1)],
                         ids=["throughput", "latency"])
def test_an_engine_for_concurrent_calls_answers_each_as_one_call_does(exported, inputs, plugin_config, streams):
    """The batching server's engine (two infer requests; two streams, or one with a latency plugin config) gives
    every thread its own rows."""
    import concurrent.futures

    _, paths = exported
    folder = os.path.join(paths["f32"], signatures.OPENVINO_DIR)
    single = openvino_model.OpenVINOModel(folder)
    engine = openvino_model.OpenVINOModel(folder, concurrent_calls=2, plugin_config=plugin_config)
    assert engine.streams == streams and single.streams == 1
    batches = np.split(inputs[0], 6)
    want = [single(batch)[signatures.PROBABILITIES] for batch in batches]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda batch: engine(batch)[signatures.PROBABILITIES], batches * 4))
    for index, probabilities in enumerate(got):
        np.testing.assert_allclose(probabilities, want[index % 6], atol=1e-6)
