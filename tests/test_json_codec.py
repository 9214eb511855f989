"""The REST JSON codec's fast paths (orjson, pybase64) read and write what its standard-library paths do."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from keras_vit.serving import json_codec
from keras_vit.serving.errors import ServingError


@pytest.mark.parametrize("body", [
    b'{"instances": [1, -9223372036854775808, 18446744073709551615, 18446744073709551616, 1e-400, 0.1]}',
    b'{"instances": [{"b64": "YWJj"}], "signature_name": "serving_default"}',
    b'{"a": 1, "a": 2, "s": "caf\\u00e9 \\ud83d\\ude00"}',
    b'{"instances": [[' + b", ".join(str(x).encode() for x in np.linspace(-3, 3, 97)) + b"]]}",
])
def test_strict_json_parses_to_the_standard_librarys_document(body):
    assert json_codec.parse_body(body) == json.loads(body)


@pytest.mark.parametrize("body, expected", [
    (b'{"instances": [NaN, Infinity, -Infinity]}', [math.nan, math.inf, -math.inf]),  # RapidJSON's kParseNanAndInfFlag
    (b'\xef\xbb\xbf{"instances": [1]}', [1]),  # a UTF-8 byte order mark
])
def test_what_rapidjson_reads_beyond_strict_json_is_read(body, expected):
    np.testing.assert_array_equal(json_codec.parse_body(body)["instances"], expected)


def test_brackets_inside_strings_do_not_count_toward_the_nesting_limit():
    text = "[{" * json_codec.MAX_JSON_DEPTH
    assert json_codec.opening_brackets(json.dumps([text]).encode()) > json_codec.MAX_JSON_DEPTH
    assert json_codec.parse_body(json.dumps({"instances": [text]}).encode())["instances"] == [text]
    deep = b'{"instances": ' + b"[" * json_codec.MAX_JSON_DEPTH + b"]" * json_codec.MAX_JSON_DEPTH + b"}"
    with pytest.raises(ServingError, match=f"nests too deeply: {json_codec.MAX_JSON_DEPTH + 1} levels"):
        json_codec.parse_body(deep)


@pytest.mark.parametrize("text", ["YWJj", "YWI=", "YQ==", "", "YWJj="])
def test_base64_is_read_as_the_standard_library_reads_it(text):
    assert json_codec._b64decode(text) == base64.b64decode(text, validate=True)


@pytest.mark.parametrize("text", ["YWJ", "YW Jj", "YWJj\n", "YW-j", "YWJjé", "YWJjZA==="])
def test_base64_the_standard_library_refuses_is_refused(text):
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        json_codec._b64decode(text)


def test_answers_give_back_every_float32_exactly():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.random((2, 500)), rng.normal(0, 1e-30, (2, 10))], axis=1).astype(np.float32)
    text = json_codec.dumps(json_codec.encode_predict_response({"scores": scores}, json_codec.ROW))
    np.testing.assert_array_equal(np.asarray(json.loads(text)["predictions"], np.float32), scores)
    one_tenth = json_codec.dumps({"predictions": np.array([0.1], np.float32)})
    assert b"0.1\n" in one_tenth  # the float32's shortest text, not the float64's 0.10000000149011612


def test_answers_of_several_outputs_and_of_non_finite_floats():
    outputs = {"probabilities": np.array([[0.25, np.nan], [np.inf, 0.5]], np.float32),
               "classes": np.array([3, 1], np.int64), "scale": np.array(2.0, np.float64)}
    rows = json.loads(json_codec.dumps(json_codec.encode_predict_response(
        {k: outputs[k] for k in ("probabilities", "classes")}, json_codec.ROW)))
    assert rows == {"predictions": [{"probabilities": [0.25, "NaN"], "classes": 3},
                                    {"probabilities": ["Infinity", 0.5], "classes": 1}]}
    columns = json.loads(json_codec.dumps(json_codec.encode_predict_response(
        {"scale": outputs["scale"], "classes": outputs["classes"]}, json_codec.COLUMNAR)))
    assert columns == {"outputs": {"scale": 2.0, "classes": [3, 1]}}
