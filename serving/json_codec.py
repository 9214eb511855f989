"""TF Serving's REST JSON formats (g3doc/api_rest.md): request bodies to arrays, outputs to JSON.

Row format: `{"instances": [...]}` -> `{"predictions": [...]}`; columnar:
`{"inputs": ...}` -> `{"outputs": ...}`. Binary values are `{"b64": "..."}`;
DT_STRING outputs whose name ends in `_bytes` are written that way too.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np
import orjson
import pybase64
import tensorflow as tf

from keras_vit.serving.errors import invalid_argument

ROW, COLUMNAR = "row", "columnar"
#: The deepest nesting of arrays and objects a request may have: a predict request of a rank-4 input, each value a
#: b64 object, nests 7 deep; deeper is refused before the document is parsed, so that nothing recursive (the JSON
#: parser, the conversions below) ever runs to a depth a client chooses.
MAX_JSON_DEPTH = 32


def nesting_depth(body: bytes) -> int:
    """How deeply a JSON text's arrays and objects nest, from its bytes, without parsing (or recursing).

    Brackets inside strings do not count: a bracket is outside every string
    when an even number of unescaped quotes precede it. Vectorised: about a
    tenth of `json.loads`' time on a 70 MB body.
    """
    data = np.frombuffer(body, np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    escaped = np.flatnonzero(data[np.maximum(quotes - 1, 0)] == ord("\\"))
    if len(escaped):  # a quote after an odd run of backslashes belongs to its string
        keep = np.ones(len(quotes), bool)
        for i in escaped:
            start = quotes[i] - 1
            while start >= 0 and data[start] == ord("\\"):
                start -= 1
            keep[i] = (quotes[i] - 1 - start) % 2 == 0
        quotes = quotes[keep]
    opens = np.flatnonzero((data == ord("[")) | (data == ord("{")))
    closes = np.flatnonzero((data == ord("]")) | (data == ord("}")))
    opens = opens[np.searchsorted(quotes, opens) % 2 == 0]
    closes = closes[np.searchsorted(quotes, closes) % 2 == 0]
    if not len(opens):
        return 0
    # At the i-th opening bracket the depth is i + 1 minus the closings before it.
    return int((np.arange(1, len(opens) + 1) - np.searchsorted(closes, opens)).max())


def opening_brackets(body: bytes) -> int:
    """How many `[` and `{` a JSON text holds, in strings or not: a bound on its nesting depth, in two vector passes
    (a tenth of `nesting_depth`'s time)."""
    data = np.frombuffer(body, np.uint8)
    return int(np.count_nonzero(data == ord("[")) + np.count_nonzero(data == ord("{")))


def parse_body(body: bytes) -> dict:
    """The request's JSON object; INVALID_ARGUMENT with the parser's message otherwise.

    orjson parses (a third of the standard library's time, without recursion);
    a text it refuses is parsed again by `json`, which reads what RapidJSON,
    TF Serving's parser, reads beyond strict JSON (`NaN`, `Infinity`, a UTF-8
    byte order mark) and words the errors as TF Serving does. On every text
    orjson accepts the two give the same document: integers exact within
    int64/uint64, doubles beyond.
    """
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    if opening_brackets(body) > MAX_JSON_DEPTH and (depth := nesting_depth(body)) > MAX_JSON_DEPTH:
        raise invalid_argument(
            f"JSON Parse error: the document nests too deeply: {depth} levels of arrays and objects, more than the "
            f"{MAX_JSON_DEPTH} a request may have"
        )
    try:
        doc = orjson.loads(body)  # refuses lone surrogates itself
    except orjson.JSONDecodeError:
        doc = _parse_leniently(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_debug(doc)} Is not object")
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_debug(doc)} not formatted correctly. 'signature_name' key must be a string value.")
    return doc


_UINT64_MAX = 2**64 - 1


def _parse_leniently(body: bytes):
    """The standard library's parse, with RapidJSON's number rules and TF Serving's error messages."""
    try:
        doc = json.loads(body, parse_int=_json_integer, parse_float=_json_float)
        _check_strings(doc)  # a lone surrogate escape ("\ud800") is valid JSON but no text
    except (json.JSONDecodeError, UnicodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}") from None
    except ValueError as error:  # a number past a double's range
        raise invalid_argument(f"JSON Parse error: {error}") from None
    return doc


def _json_float(text: str) -> float:
    """A JSON number as RapidJSON reads it: a double, and an error past the double's range (1e400)."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double")
    return value


def _json_integer(text: str) -> int | float:
    """A JSON integer as RapidJSON reads it: exact within int64/uint64, a double beyond (digits are never int()ed)."""
    if len(text) <= 21:
        value = int(text)
        if -(2**63) <= value <= _UINT64_MAX:
            return value
    return _json_float(text)


def _check_strings(value, depth: int = 0) -> None:
    """UnicodeError for a string holding a lone surrogate (valid JSON escapes, invalid text)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def decode_predict_request(doc: dict, input_infos) -> tuple[dict[str, np.ndarray], str]:
    """(named input arrays, format) of a parsed predict request, typed by the signature's TensorInfos."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances == has_inputs:
        if not has_instances:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        raise invalid_argument(
            f"JSON Value: {_debug(doc)} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        )
    names = sorted(input_infos)
    dtypes = {n: tf.dtypes.as_dtype(input_infos[n].dtype) for n in names}
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid_argument(f"JSON Value: {_debug(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid_argument(f"JSON Value: {_debug(doc)} No values in 'instances' array")
        columns = _instance_columns(instances, names)
        for n in names:
            for value in columns[n]:
                _check_rank(value, input_infos[n], f"'instances' list, input {n}", batched=True)
        arrays = {n: _to_array(columns[n], dtypes[n], f"'instances' list, input {n}") for n in names}
        return arrays, ROW
    inputs = doc["inputs"]
    if isinstance(inputs, dict) and "b64" not in inputs:
        for n in names:
            if n not in inputs:
                raise invalid_argument(f"Missing named input: {n} in 'inputs' object.")
            _check_rank(inputs[n], input_infos[n], f"input {n}", batched=False)
        return {n: _to_array(inputs[n], dtypes[n], f"input {n}") for n in names}, COLUMNAR
    if len(names) > 1:
        raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map")
    _check_rank(inputs, input_infos[names[0]], f"input {names[0]}", batched=False)
    return {names[0]: _to_array(inputs, dtypes[names[0]], f"input {names[0]}")}, COLUMNAR


def _is_named(instance) -> bool:
    """An instance object of named inputs; {"b64": "<string>"} alone is a value (json_tensor.cc's IsValBase64Object)."""
    return isinstance(instance, dict) and not (len(instance) == 1 and isinstance(instance.get("b64"), str))


def _instance_columns(instances: list, names: list[str]) -> dict[str, list]:
    """Each input's values over the instances, by json_tensor.cc's rules.

    The first instance decides the form: all objects naming exactly the
    signature's inputs, or all bare values (one input only); a mix, an unknown
    name or a missing one is INVALID_ARGUMENT with TF Serving's message.
    """
    named = _is_named(instances[0])
    if len(names) > 1 and not named:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map"
        )
    columns: dict[str, list] = {n: [] for n in names}
    for i, instance in enumerate(instances):
        if not named:
            if _is_named(instance):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
            columns[names[0]].append(instance)
            continue
        if not _is_named(instance):
            raise invalid_argument(f"Expecting object but got list at item {i} of input list")
        for key, value in instance.items():
            if key not in columns:
                raise invalid_argument(
                    f"Failed to process element: {i} key: {key} of 'instances' list. "
                    f"Error: INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
            columns[key].append(value)
        if set(instance) != set(names):
            raise invalid_argument(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_debug(instance)} "
                f"keys must be equal to: {','.join(names)}"
            )
    return columns


def _list_depth(value) -> int:
    """How deeply lists nest along a JSON value's first elements (0 for a number, a string or a b64 object).

    Deeper lists elsewhere make the value ragged, which `_to_array` refuses.
    """
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth + isinstance(value, list)  # [] is one level


def _check_rank(value, info, where: str, batched: bool) -> None:
    """INVALID_ARGUMENT when `value` nests lists deeper than the input's rank allows (one less per row instance)."""
    if info.tensor_shape.unknown_rank:
        return
    rank = len(info.tensor_shape.dim) - (1 if batched else 0)
    depth = _list_depth(value)
    if depth > rank:
        raise invalid_argument(
            f"JSON Value of {where}: lists nest {depth} deep, more than the input's rank allows "
            f"({rank}{' per instance' if batched else ''})."
        )


def _to_array(value, dtype: tf.dtypes.DType, where: str) -> np.ndarray:
    leaves = _map_leaves(value, lambda leaf: _leaf(leaf, dtype))
    try:
        if dtype == tf.string:
            array = np.empty(_shape(leaves, where), dtype=object)
            array[...] = leaves if array.ndim else leaves
            return array
        return np.asarray(leaves, dtype=dtype.as_numpy_dtype)
    except ValueError as error:
        raise invalid_argument(f"Ragged or malformed {where}: all lists at a level must have the same length ({error}).") from error


def _shape(value, where: str) -> tuple[int, ...]:
    """The shape of nested lists, refusing ragged ones."""
    if not isinstance(value, list):
        return ()
    shapes = {_shape(v, where) for v in value}
    if len(shapes) > 1:
        raise invalid_argument(f"Ragged {where}: lists at one level have different shapes {sorted(shapes)}.")
    return (len(value),) + (shapes.pop() if shapes else ())


def _map_leaves(value, fn):
    if isinstance(value, list):
        return [_map_leaves(v, fn) for v in value]
    return fn(value)


def _leaf(leaf, dtype: tf.dtypes.DType):
    if isinstance(leaf, dict):
        if set(leaf) != {"b64"} or not isinstance(leaf["b64"], str):
            raise invalid_argument(f"JSON Value: {_debug(leaf)} not formatted correctly for base64 data")
        if dtype != tf.string:
            raise invalid_argument(f"JSON Value: {_debug(leaf)} Type: Object is not of expected type: {dtype.name}")
        return _b64decode(leaf["b64"])
    if dtype == tf.string:
        if not isinstance(leaf, str):
            raise invalid_argument(f"JSON Value: {_debug(leaf)} Type: {_type(leaf)} is not of expected type: string")
        return leaf.encode()
    if dtype == tf.bool:
        if not isinstance(leaf, bool):
            raise invalid_argument(f"JSON Value: {_debug(leaf)} Type: {_type(leaf)} is not of expected type: bool")
        return leaf
    if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
        raise invalid_argument(f"JSON Value: {_debug(leaf)} Type: {_type(leaf)} is not of expected type: {dtype.name}")
    if dtype.is_integer and isinstance(leaf, float) and not leaf.is_integer():
        raise invalid_argument(f"JSON Value: {_debug(leaf)} Type: Number is not of expected type: {dtype.name}")
    return leaf


def _b64decode(text: str) -> bytes:
    """Standard base64 as `base64.b64decode(validate=True)` reads it, with pybase64's SIMD decoder (a 200 KB image:
    10 us against 400). pybase64 also refuses padding after a whole quantum ("YWJj="), which the standard library
    ignores: such text is decoded again by the standard library, so that both accept the same."""
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise invalid_argument("Unable to base64 decode") from error


def dumps(document) -> bytes:
    """A REST answer's JSON text, indented by two spaces, written by orjson in C (a thousand class probabilities:
    25 us against the standard library's 720). NumPy float32 arrays are written directly, each value as the
    shortest text that reads back as the same float32: no noise digits from widening to float64 (which TF Serving
    avoids by writing six significant digits), and no bits lost."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def encode_predict_response(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    names = sorted(outputs)
    values = {n: _jsonable(outputs[n], n) for n in names}
    if fmt == COLUMNAR:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    batch = {len(v) for v in values.values()}
    if len(batch) != 1:
        raise invalid_argument(f"Output tensors have different batch sizes {sorted(batch)}: use the columnar ('inputs') format.")
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{n: values[n][i] for n in names} for i in range(batch.pop())]}


def _jsonable(array: np.ndarray, name: str):
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = name.endswith("_bytes")
        return _map_array(array, lambda b: {"b64": base64.b64encode(b).decode()} if as_b64 else _text(b))
    if array.dtype.kind == "f":
        if np.isfinite(array).all():  # the common case: `dumps` writes the array in C
            return np.ascontiguousarray(array) if array.ndim and array.dtype in _ORJSON_FLOATS else array.tolist()
        return _map_array(array, lambda x: x if math.isfinite(x) else ("NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")))
    return array.tolist()


#: The float dtypes orjson writes from NumPy arrays of rank 1 and more (others, bfloat16 say, go through lists).
_ORJSON_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _map_array(array, fn):
    if isinstance(array, np.ndarray) and array.ndim > 0:
        return [_map_array(a, fn) for a in array]
    return fn(array.item() if isinstance(array, np.generic | np.ndarray) else array)


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _type(value) -> str:
    return {str: "String", bool: "Bool", dict: "Object", list: "Array", type(None): "Null"}.get(type(value), "Number")


def _debug(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."
