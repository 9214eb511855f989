"""Each analysis from images to a PNG and a one-line summary, and all of them on one HTML page."""

from __future__ import annotations

import html
import os

import numpy as np

from keras_vit.analysis.attention import attention_rollout, mean_attention_distance
from keras_vit.analysis.embeddings import embedding_filters, position_embedding_similarity
from keras_vit.analysis import plots
from keras_vit.preprocessing import decode_for_eval, model_inputs

#: The report's figures, in page order: (file, heading, what the paper shows).
FIGURES = (
    ("attention.png", "Attention rollout", "Figure 6: the class token's attention, rolled out through every block."),
    ("distance.png", "Mean attention distance", "Figure 7 (right) and 11: how far each head looks, by depth."),
    ("posemb.png", "Position embedding similarity", "Figure 7 (center) and 10: what the position embeddings encode."),
    ("filters.png", "Embedding filters", "Figure 7 (left): principal components of the patch embedding."),
)


def analysed_model(source: str, variant: str | None = None, image_size=None):
    """The VisionTransformer to analyse: `keras_vit.open_model`, or the encoder of a masked-patch model."""
    from keras_vit.models.opening import open_model

    from keras_vit.models.vision_transformer import VisionTransformer

    model = open_model(source, variant, image_size)
    model = getattr(model, "backbone", model)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{source} holds a {type(model).__name__}; the analyses read a VisionTransformer's attention.")
    return model


def read_images(paths: list[str], model) -> np.ndarray:
    """Image files -> [n, h, w, 3] pixels in [0, 255], resized and cropped as the model evaluates."""
    import tensorflow as tf

    out = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"Image file {path!r} does not exist.")
        try:
            out.append(decode_for_eval(tf.io.read_file(path), model.image_size, model.crop_fraction).numpy())
        except tf.errors.InvalidArgumentError as error:
            raise ValueError(f"Cannot decode {path!r} as an image: {error.message.splitlines()[0]}") from None
    return np.stack(out)


def _title(model) -> str:
    kind = model.variant or f"custom ViT (patch {model.patch_size[0]}x{model.patch_size[1]}, D {model.hidden_size})"
    return f"{model.name}: {kind}, {model.image_size[0]}x{model.image_size[1]}px"


def attention(model, pixels: np.ndarray, out: str) -> tuple[str, str]:
    rollouts = attention_rollout(model, model_inputs(model, pixels))
    written = plots.plot_attention(pixels, rollouts, out, title=f"Attention rollout of {_title(model)}")
    peaks = [np.unravel_index(r.argmax(), r.shape) for r in rollouts]
    return written, f"Rollout over a {rollouts.shape[1]}x{rollouts.shape[2]} grid; peaks at {[tuple(map(int, p)) for p in peaks]}"


def distance(model, pixels: np.ndarray, out: str, level: str = "pixel") -> tuple[str, str]:
    values = mean_attention_distance(model, model_inputs(model, pixels), level=level)
    written = plots.plot_distance(values, out, title=f"Mean attention distance of {_title(model)}", patch_stride=model.patch_stride)
    per_block = ", ".join(f"{low:.1f}-{high:.1f}" for low, high in zip(values.min(1), values.max(1)))
    return written, f"Mean attention distance in pixels over {len(pixels)} images, per block (min-max over heads): {per_block}"


def posemb(model, out: str) -> tuple[str, str]:
    similarity = position_embedding_similarity(model)
    gh, gw = similarity.shape[:2]
    written = plots.plot_position_similarity(similarity, out, title=f"Position embeddings of {_title(model)}")
    flat = similarity.reshape(gh * gw, gh * gw)
    off_diagonal = flat[~np.eye(gh * gw, dtype=bool)]
    mean = f"{off_diagonal.mean():.3f}" if off_diagonal.size else "none (one position)"
    return written, f"Position embedding similarity over a {gh}x{gw} grid: off-diagonal mean {mean}"


def filters(model, count: int, out: str) -> tuple[str, str]:
    components, ratios = embedding_filters(model, count, explained_variance=True)
    written = plots.plot_filters(components, ratios, out, title=f"Embedding filters of {_title(model)}")
    return written, f"{count} principal components explain {ratios.sum():.1%} of the filters' variance"


def write_report(
    model,
    out: str,
    pixels: np.ndarray | None,
    rollouts: int = 4,
    level: str = "pixel",
    components: int = 28,
    source: str = "",
) -> str:
    """Every analysis that applies to `model` into `out/`, with `out/index.html` showing them; returns its path.

    The attention analyses need `pixels` (the first `rollouts` are drawn); an
    analysis that does not apply (no learned position embeddings, filters on
    a hybrid's feature channels) is listed with the reason instead.
    """
    os.makedirs(out, exist_ok=True)
    makers = {
        "attention.png": lambda path: attention(model, pixels[:rollouts], path),
        "distance.png": lambda path: distance(model, pixels, path, level),
        "posemb.png": lambda path: posemb(model, path),
        "filters.png": lambda path: filters(model, min(components, _max_components(model)), path),
    }
    sections = []
    for file, heading, caption in FIGURES:
        if pixels is None and file in ("attention.png", "distance.png"):
            body = "<p><em>Not drawn: give --image or --dataset.</em></p>"
        else:
            try:
                _, summary = makers[file](os.path.join(out, file))
                body = f'<p>{html.escape(summary)}</p><img src="{file}" alt="{html.escape(heading)}">'
            except ValueError as error:
                body = f"<p><em>Not drawn: {html.escape(str(error))}</em></p>"
        sections.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(caption)}</p>{body}")
    facts = (
        f"{model.count_params():,} parameters; grid {model.grid_size[0]}x{model.grid_size[1]}; "
        f"{model.patch_stride[0]}x{model.patch_stride[1]} input pixels per token; {model.num_layers} blocks x "
        f"{model.num_heads} heads; classifier {model.classifier}; position embedding {model.position_embedding}"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(_title(model))}</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(_title(model))}</h1><p>{html.escape(source)}: {html.escape(facts)}.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    index = os.path.join(out, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    return index


def _max_components(model) -> int:
    kernel_shape = model.embedding.projection.kernel.shape
    return min(int(np.prod(kernel_shape[:3])), int(kernel_shape[3]))
