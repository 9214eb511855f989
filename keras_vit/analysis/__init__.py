"""The paper's looks inside a trained ViT (section 4.5, appendix D.7), for any keras_vit model.

    rollout = keras_vit.analysis.attention_rollout(model, images)          # [batch, gh, gw]   (Fig. 6)
    distance = keras_vit.analysis.mean_attention_distance(model, images)   # [layers, heads], pixels (Fig. 7 right)
    similarity = keras_vit.analysis.position_embedding_similarity(model)   # [gh, gw, gh, gw]  (Fig. 7 center)
    filters = keras_vit.analysis.embedding_filters(model, count=28)        # [28, P, P, C]     (Fig. 7 left)
    gflops = keras_vit.analysis.flops(model) / 1e9                        # one image's forward pass (Table 6)

`images` are model inputs, as for `model.predict`. From the command line,
`python -m keras_vit.analysis {attention,distance,posemb,filters,report}`
writes the figures as PNGs (matplotlib: `pip install 'keras_vit[analysis]'`). The
names are imported on first use: the command's `--help` needs no TensorFlow.
"""

from keras_vit._lazy import lazy_attributes

_EXPORTS = {
    **dict.fromkeys(
        ("attention_distance", "attention_rollout", "mean_attention_distance", "patch_distances", "rollout_matrix",
         "select_rollout"),
        "keras_vit.analysis.attention",
    ),
    **dict.fromkeys(("flops", "training_flops", "TRAINING_PASSES"), "keras_vit.analysis.compute"),
    **dict.fromkeys(
        ("embedding_filters", "position_embedding_similarity", "principal_components"), "keras_vit.analysis.embeddings"
    ),
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_attributes(globals(), _EXPORTS)
