"""TF Serving's config messages that the tensorflow-serving-api package does not ship, declared with their names,
field names and numbers, so that the text files TF Serving reads parse the same here (protobuf's text format).

- `BatchingParameters` (session_bundle_config.proto): `--batching_parameters_file`.
- `MonitoringConfig` and `PrometheusConfig` (config/monitoring_config.proto): `--monitoring_config_file`.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PACKAGE = "tensorflow.serving"
_OPTIONAL, _REPEATED = 1, 3
_INT64, _BOOL, _STRING, _MESSAGE = 3, 8, 9, 11


def _message_class(name: str, declare) -> type:
    """The message class `PACKAGE.name`, declaring its file (with `declare(file_proto)`) the first time."""
    pool = descriptor_pool.Default()
    full_name = f"{PACKAGE}.{name}"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"keras_vit/tensorflow_serving_{name.lower()}.proto", package=PACKAGE, syntax="proto3"
    )
    declare(proto)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def batching_parameters_class() -> type:
    """`tensorflow.serving.BatchingParameters`."""

    def declare(proto) -> None:
        proto.dependency.append(wrappers_pb2.DESCRIPTOR.name)
        message = proto.message_type.add(name="BatchingParameters")
        wrapped = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
                   ("max_enqueued_batches", "Int64Value"), ("num_batch_threads", "Int64Value"),
                   ("thread_pool_name", "StringValue")]
        for number, (field, kind) in enumerate(wrapped, start=1):
            message.field.add(name=field, number=number, label=_OPTIONAL, type=_MESSAGE, type_name=f".google.protobuf.{kind}")
        message.field.add(name="allowed_batch_sizes", number=6, label=_REPEATED, type=_INT64)
        message.field.add(name="pad_variable_length_inputs", number=7, label=_OPTIONAL, type=_BOOL)

    return _message_class("BatchingParameters", declare)


def monitoring_config_class() -> type:
    """`tensorflow.serving.MonitoringConfig` { prometheus_config { enable, path } }."""

    def declare(proto) -> None:
        prometheus = proto.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, label=_OPTIONAL, type=_BOOL)
        prometheus.field.add(name="path", number=2, label=_OPTIONAL, type=_STRING)
        monitoring = proto.message_type.add(name="MonitoringConfig")
        monitoring.field.add(name="prometheus_config", number=1, label=_OPTIONAL, type=_MESSAGE,
                             type_name=f".{PACKAGE}.PrometheusConfig")

    return _message_class("MonitoringConfig", declare)
