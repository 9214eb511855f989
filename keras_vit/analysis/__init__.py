"""The paper's looks inside a trained ViT (section 4.5, appendix D.7), for any keras_vit model.

    rollout = keras_vit.analysis.attention_rollout(model, images)          # [batch, gh, gw]   (Fig. 6)
    distance = keras_vit.analysis.mean_attention_distance(model, images)   # [layers, heads], pixels (Fig. 7 right)
    similarity = keras_vit.analysis.position_embedding_similarity(model)   # [gh, gw, gh, gw]  (Fig. 7 center)
    filters = keras_vit.analysis.embedding_filters(model, count=28)        # [28, P, P, C]     (Fig. 7 left)

`images` are model inputs, as for `model.predict`. From the command line,
`python -m keras_vit.analysis {attention,distance,posemb,filters,report}`
writes the figures as PNGs (matplotlib: `pip install 'keras_vit[analysis]'`).
"""

from keras_vit.analysis.attention import (
    attention_distance,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    rollout_matrix,
    select_rollout,
)
from keras_vit.analysis.embeddings import embedding_filters, position_embedding_similarity, principal_components

__all__ = [
    "attention_distance",
    "attention_rollout",
    "embedding_filters",
    "mean_attention_distance",
    "patch_distances",
    "position_embedding_similarity",
    "principal_components",
    "rollout_matrix",
    "select_rollout",
]
