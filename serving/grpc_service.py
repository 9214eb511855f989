"""TF Serving's gRPC services (PredictionService, ModelService) on grpcio, from the tensorflow-serving-api protos."""

from __future__ import annotations

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from keras_vit.serving import protos
from keras_vit.serving.errors import ServingError, invalid_argument
from keras_vit.serving.model_manager import ModelManager


def _spec(request_spec) -> tuple[str, int | None, str | None]:
    version = request_spec.version.value if request_spec.HasField("version") else None
    label = request_spec.version_label or None
    if version is not None and label is not None:
        raise invalid_argument(f"Both model version ({version}) and model version label ({label}) cannot be supplied.")
    return request_spec.name, version, label


def _abort(context: grpc.ServicerContext, error: ServingError):
    context.abort(error.grpc_status, error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, manager: ModelManager):
        self.manager = manager

    def Predict(self, request, context):
        try:
            servable = self.manager.get(*_spec(request.model_spec))
            key, _ = servable.signature(request.model_spec.signature_name)
            try:
                inputs = {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}
            except (TypeError, ValueError) as error:
                raise invalid_argument(f"Could not read input tensors: {error}") from error
            outputs = servable.predict(key, inputs)
            wanted = list(request.output_filter) or list(outputs)
            unknown = [n for n in wanted if n not in outputs]
            if unknown:
                raise invalid_argument(f"output tensor alias not found in signature: {unknown[0]}")
            response = predict_pb2.PredictResponse(model_spec=protos.model_spec(servable.name, servable.version, key))
            for name in wanted:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
            return response
        except ServingError as error:
            _abort(context, error)

    def GetModelMetadata(self, request, context):
        try:
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


def make_grpc_server(manager: ModelManager, address: str, max_workers: int = 32, max_message_bytes: int = 64 << 20) -> grpc.Server:
    options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(manager), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"Could not bind the gRPC server to {address}.")
    return server
