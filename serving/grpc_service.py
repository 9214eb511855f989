"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio, from the tensorflow-serving-api protos."""

from __future__ import annotations

import math
from concurrent import futures

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_vit.serving import protos
from keras_vit.serving.errors import ServingError, invalid_argument
from keras_vit.serving.metrics import metrics
from keras_vit.serving.connections import ConnectionLimits
from keras_vit.serving.model_manager import ModelManager


def _spec(request_spec) -> tuple[str, int | None, str | None]:
    version = request_spec.version.value if request_spec.HasField("version") else None
    label = request_spec.version_label or None
    if version is not None and label is not None:
        raise invalid_argument(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
    return request_spec.name, version, label


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(error.grpc_status, error.message)


def read_tensor(name: str, proto, signature, max_bytes: int) -> np.ndarray:
    """An input TensorProto as an array, after checking its dtype against the signature's (no casting, as TF
    Serving) and that it expands to at most `max_bytes` (a compact proto of one value can declare any shape)."""
    expected = signature.inputs[name].dtype if name in signature.inputs else proto.dtype
    if proto.dtype != expected:
        raise invalid_argument(
            f"Expects input {name!r} to be {_dtype_name(expected)} but {_dtype_name(proto.dtype)} is provided."
        )
    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        raise invalid_argument(f"Input {name!r} has no fully defined shape: {dims}.")
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
        itemsize = 1 if dtype == tf.string else np.dtype(dtype.as_numpy_dtype).itemsize
    except (TypeError, ValueError):
        raise invalid_argument(f"Input {name!r} has dtype {_dtype_name(proto.dtype)}, which a request cannot carry.") from None
    elements = math.prod(dims)
    if dtype == tf.string:  # padded with its last value, one Python object per element
        values = proto.string_val
        size = sum(len(v) for v in values) + max(elements - len(values), 0) * len(values[-1] if values else b"")
        size += elements * np.dtype(object).itemsize
    else:
        size = elements * itemsize
    if size > max_bytes:
        raise invalid_argument(
            f"Input {name!r} of shape {dims} expands to {size:,} bytes, more than the limit of {max_bytes:,} bytes."
        )
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"Could not read input tensor {name!r}: {error}") from None


def _dtype_name(enum: int) -> str:
    """"float", "int32", ...: TF Serving's names of a DataType enum value (DT_FLOAT is "float")."""
    try:
        return tf.dtypes.as_dtype(enum).name.replace("float32", "float").replace("float64", "double")
    except TypeError:
        return types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else f"dtype {enum}"


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and metadata; inputs expand to at most `max_tensor_bytes` each (the largest message accepted)."""

    def __init__(self, manager: ModelManager, max_tensor_bytes: int = 64 << 20):
        self.manager = manager
        self.max_tensor_bytes = max_tensor_bytes

    def Predict(self, request, context):
        try:
            with metrics().request(request.model_spec.name, "predict", "GRPC"):
                return self._predict(request)
        except ServingError as error:
            _abort(context, error)

    def _predict(self, request):
        servable = self.manager.get(*_spec(request.model_spec))
        key, signature = servable.signature(request.model_spec.signature_name)
        inputs = {name: read_tensor(name, proto, signature, self.max_tensor_bytes) for name, proto in request.inputs.items()}
        outputs = servable.predict(key, inputs)
        wanted = list(request.output_filter) or list(outputs)
        unknown = [n for n in wanted if n not in outputs]
        if unknown:
            raise invalid_argument(f"output tensor alias not found in signature: {unknown[0]}")
        response = predict_pb2.PredictResponse(model_spec=protos.model_spec(servable.name, servable.version, key))
        for name in wanted:
            response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    def GetModelMetadata(self, request, context):
        try:
            with metrics().request(request.model_spec.name, "GetModelMetadata", "GRPC"):
                fields = list(request.metadata_field)
                if fields != [protos.SIGNATURE_DEF]:
                    raise invalid_argument("Metadata field signature_def is the only one supported; got: " + ", ".join(fields))
                return protos.metadata_response(self.manager.get(*_spec(request.model_spec)))
        except ServingError as error:
            _abort(context, error)

    def Classify(self, request, context):
        self._refuse(request, context, "classify")

    def Regress(self, request, context):
        self._refuse(request, context, "regress")

    def _refuse(self, request, context, method: str):
        try:
            with metrics().request(request.model_spec.name, method, "GRPC"):
                self.manager.get(*_spec(request.model_spec)).refuse(request.model_spec.signature_name, method)
        except ServingError as error:
            _abort(context, error)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def GetModelStatus(self, request, context):
        try:
            return protos.status_response(self.manager, *_spec(request.model_spec))
        except ServingError as error:
            _abort(context, error)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Reloading the model config over gRPC is not supported.")


def make_grpc_server(manager: ModelManager, address: str, max_workers: int = 32, max_message_bytes: int = 64 << 20,
                     limits: ConnectionLimits = ConnectionLimits()) -> grpc.Server:
    # No SO_REUSEPORT (gRPC's default on Linux): a second server on a busy port would split the first one's requests.
    options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 0), *limits.grpc_options()]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager, max_message_bytes), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"--port: cannot listen on {address} for gRPC: the port is in use, or the address is not this "
                      "machine's.")
    return server
