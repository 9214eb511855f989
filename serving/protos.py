"""Model status and metadata as tensorflow-serving-api protos, and their REST JSON documents."""

from __future__ import annotations

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from keras_vit.serving.model_manager import ModelManager
from keras_vit.serving.servable import Servable

SIGNATURE_DEF = "signature_def"


def model_spec(name: str, version: int | None = None, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = version
    return spec


def status_response(manager: ModelManager, name: str, version: int | None = None, label: str | None = None):
    """GetModelStatusResponse: every served version (or the one asked for) AVAILABLE."""
    if version is not None or label is not None:
        versions = [manager.get(name, version, label).version]
    else:
        versions = manager.versions(name)
    response = get_model_status_pb2.GetModelStatusResponse()
    for v in versions:
        status = response.model_version_status.add(version=v, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        status.status.error_code = 0
        status.status.error_message = ""
    return response


def metadata_response(servable: Servable):
    """GetModelMetadataResponse with the `signature_def` field, as TF Serving fills it."""
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(servable.name, servable.version))
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF].Pack(signature_map)
    return response


def status_json(manager: ModelManager, name: str, version: int | None, label: str | None) -> str:
    return json_format.MessageToJson(
        status_response(manager, name, version, label), always_print_fields_with_no_presence=True, indent=2
    )


def metadata_json(servable: Servable) -> str:
    """{"model_spec": ..., "metadata": {"signature_def": ...}} with proto field names, as TF Serving writes it."""
    response = metadata_response(servable)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF].Unpack(signature_map)
    options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True, indent=2)
    return (
        "{\n"
        f'"model_spec": {json_format.MessageToJson(response.model_spec, **options)},\n'
        f'"metadata": {{"signature_def": {json_format.MessageToJson(signature_map, **options)}}}\n'
        "}\n"
    )
