"""Which model versions are served: the model config, version policies, and polling of model_base_path."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time

from keras_vit.serving.errors import invalid_argument, not_found
from keras_vit.serving.metrics import metrics
from keras_vit.serving.native_heap import release_free_memory
from keras_vit.serving.servable import Servable, ServingOptions
from keras_vit.serving.signatures import OPENVINO_DIR, TFLITE_FILE

logger = logging.getLogger(__name__)

#: Longest wait between two attempts at a version that fails to load (the wait doubles from the poll interval).
MAX_RETRY_SECONDS = 300.0


@dataclasses.dataclass
class LoadFailure:
    """A version that failed to load: retried after `retry_at`, or at once when its saved_model.pb changes."""

    stamp: tuple[int, int] | None  # (mtime_ns, size) of its saved_model.pb when it failed
    attempts: int
    retry_at: float


@dataclasses.dataclass
class ModelConfig:
    """One entry of a model_config_list: `policy` is "latest" (with `num_versions`), "all" or "specific"."""

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = dataclasses.field(default_factory=dict)

    def select(self, available: list[int]) -> list[int]:
        if self.policy == "all":
            return sorted(available)
        if self.policy == "specific":
            return sorted(v for v in available if v in self.versions)
        return sorted(available)[-self.num_versions:]


def read_model_config_file(path: str) -> list[ModelConfig]:
    """Parses TF Serving's ModelServerConfig text proto (model_config_list)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(path) as f:
        text = f.read()
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as error:  # its message starts with line:column
        raise ValueError(f"{path}:{error}") from None
    out = []
    for entry in config.model_config_list.config:
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        out.append(
            ModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                policy=policy,
                num_versions=max(1, entry.model_version_policy.latest.num_versions) if policy == "latest" else 1,
                versions=tuple(entry.model_version_policy.specific.versions),
                labels=dict(entry.version_labels),
            )
        )
    return out


class ModelManager:
    """Loads the versions each policy selects, polls for new ones, and unloads the rest.

    A new version is loaded while the old one keeps serving; the swap of the
    served set is atomic, and requests already holding the old version finish
    on it, so no request fails during a swap.
    """

    def __init__(self, configs: list[ModelConfig], poll_seconds: float = 1.0,
                 options: ServingOptions = ServingOptions()):
        self.configs = {c.name: c for c in configs}
        self.poll_seconds = poll_seconds
        #: How each version is loaded and run.
        self.options = options
        self.served: dict[str, dict[int, Servable]] = {c.name: {} for c in configs}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.failures: dict[tuple[str, int], LoadFailure] = {}
        self.empty_folders: set[str] = set()  # version folders without a saved_model.pb, logged once each

    def start(self) -> None:
        self.poll()
        if self.poll_seconds > 0:
            self.thread = threading.Thread(target=self._poll_forever, daemon=True)
            self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for versions in self.served.values():
            for servable in versions.values():
                servable.close()

    def _poll_forever(self) -> None:
        while not self.stopped.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a broken new version must not stop serving the others
                logger.exception("Polling model versions failed")

    def poll(self) -> None:
        for name, config in self.configs.items():
            self._log_empty_folders(config.base_path)
            wanted = config.select(available_versions(config.base_path))
            current = self.served[name]
            loaded = {}
            for version in wanted:
                if version not in current and self._due(name, config.base_path, version):
                    servable = self._load(name, config.base_path, version)
                    if servable is not None:
                        loaded[version] = servable
            if not loaded and set(wanted) == set(current):
                continue
            candidates = {**current, **loaded}
            serving = {v: candidates[v] for v in wanted if v in candidates}
            if not serving:  # nothing new could be loaded: keep serving what we have
                serving = current
            with self.lock:
                self.served[name] = serving
            metrics().versions(name, len(serving))
            unloaded = [v for v in current if v not in serving]
            for version in unloaded:
                current[version].close()
                logger.info("Unloaded %s version %d", name, version)
            if unloaded:
                release_free_memory(collect=True)

    def _due(self, name: str, base_path: str, version: int) -> bool:
        """Whether to try loading a version: never failed, its back-off is over, or its saved_model.pb changed."""
        failure = self.failures.get((name, version))
        return failure is None or failure.stamp != _stamp(base_path, version) or time.monotonic() >= failure.retry_at

    def _load(self, name: str, base_path: str, version: int) -> Servable | None:
        """The version's servable; on failure None, logged once (with its traceback at DEBUG), retried with back-off."""
        path = os.path.join(base_path, str(version))
        stamp = _stamp(base_path, version)
        try:
            servable = Servable(name, version, path, self.options)
        except Exception as error:
            metrics().load_attempt(path, succeeded=False)
            previous = self.failures.get((name, version))
            attempts = previous.attempts + 1 if previous is not None and previous.stamp == stamp else 1
            delay = min(MAX_RETRY_SECONDS, max(self.poll_seconds, 1.0) * 2**attempts)
            self.failures[(name, version)] = LoadFailure(stamp, attempts, time.monotonic() + delay)
            summary = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if attempts == 1:
                logger.error(
                    "Could not load %s version %d from %s (%s); retrying with back-off, and at once when its "
                    "saved_model.pb changes", name, version, path, summary[:500],
                )
            logger.debug("Loading %s version %d failed (attempt %d)", name, version, attempts, exc_info=True)
            return None
        self.failures.pop((name, version), None)
        metrics().load_attempt(path, succeeded=True)
        engine = {"LiteRT": f" ({TFLITE_FILE}, run by LiteRT)", "OpenVINO": f" ({OPENVINO_DIR}/, run by OpenVINO)"}
        engine = engine.get(servable.runtime, "")
        if servable.runtime == "OpenVINO":
            engine += f", {servable.engine.streams} stream{'s' if servable.engine.streams > 1 else ''}"
        logger.info("Loaded %s version %d%s", name, version, engine)
        if servable.requires_xla and not self.options.xla_cpu_compilation_enabled and not servable.engine:
            logger.warning(
                "%s version %d was exported with --jit_compile: its requests are refused until the server runs with "
                "--xla_cpu_compilation_enabled", name, version,
            )
        return servable

    def _log_empty_folders(self, base_path: str) -> None:
        """Logs once each version folder that has no saved_model.pb (it is not served until it has one)."""
        empty = set(empty_version_folders(base_path))
        for folder in sorted(empty - self.empty_folders):
            logger.warning("Version folder %s has no saved_model.pb: not served until it has one", folder)
        self.empty_folders = {f for f in self.empty_folders if os.path.dirname(f) != base_path} | empty

    def get(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names: the latest version, a specific one, or a labelled one."""
        with self.lock:
            versions = self.served.get(name)
        if not versions:
            if version is not None:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            raise not_found(f"Servable not found for request: Latest({name})")
        if label is not None:
            labels = self.configs[name].labels
            if label not in labels:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return versions[version]

    def versions(self, name: str) -> list[int]:
        with self.lock:
            if name not in self.served:
                raise not_found(f"Could not find any versions of model {name}")
            return sorted(self.served[name])


def version_of(folder: str) -> int | None:
    """The version a folder name gives: ASCII digits only ("²" and "١" are digits to `str.isdigit`, not versions)."""
    return int(folder) if folder.isascii() and folder.isdigit() else None


def available_versions(base_path: str) -> list[int]:
    """Numeric sub-folders holding a saved_model.pb (other entries are ignored, as TF Serving does)."""
    if not os.path.isdir(base_path):
        return []
    return [
        version_of(d) for d in os.listdir(base_path)
        if version_of(d) is not None and os.path.exists(os.path.join(base_path, d, "saved_model.pb"))
    ]


def empty_version_folders(base_path: str) -> list[str]:
    """Paths of version folders (ASCII digits) under `base_path` without a saved_model.pb."""
    if not os.path.isdir(base_path):
        return []
    return [
        os.path.join(base_path, d) for d in os.listdir(base_path)
        if version_of(d) is not None and os.path.isdir(os.path.join(base_path, d))
        and not os.path.exists(os.path.join(base_path, d, "saved_model.pb"))
    ]


def _stamp(base_path: str, version: int) -> tuple[int, int] | None:
    """(mtime_ns, size) of a version's saved_model.pb, or None when it has none."""
    try:
        info = os.stat(os.path.join(base_path, str(version), "saved_model.pb"))
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size
