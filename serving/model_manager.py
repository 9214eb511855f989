"""Which model versions are served: the model config, version policies, and polling of model_base_path."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading

from keras_vit.serving.batching import BatchingOptions
from keras_vit.serving.errors import invalid_argument, not_found
from keras_vit.serving.image_limits import DEFAULT_MAX_IMAGE_PIXELS
from keras_vit.serving.servable import Servable

logger = logging.getLogger(__name__)


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

    def __init__(
        self,
        configs: list[ModelConfig],
        poll_seconds: float = 1.0,
        batching: BatchingOptions | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        self.configs = {c.name: c for c in configs}
        self.poll_seconds = poll_seconds
        self.batching = batching
        self.max_image_pixels = max_image_pixels
        self.served: dict[str, dict[int, Servable]] = {c.name: {} for c in configs}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

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
            wanted = config.select(available_versions(config.base_path))
            current = self.served[name]
            loaded = {}
            for version in wanted:
                if version in current:
                    continue
                try:
                    loaded[version] = Servable(
                        name, version, os.path.join(config.base_path, str(version)), self.batching, self.max_image_pixels
                    )
                    logger.info("Loaded %s version %d", name, version)
                except Exception:
                    logger.exception("Could not load %s version %d", name, version)
            if not loaded and set(wanted) == set(current):
                continue
            candidates = {**current, **loaded}
            serving = {v: candidates[v] for v in wanted if v in candidates}
            if not serving:  # nothing new could be loaded: keep serving what we have
                serving = current
            with self.lock:
                self.served[name] = serving
            for version, servable in current.items():
                if version not in serving:
                    servable.close()
                    logger.info("Unloaded %s version %d", name, version)

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
