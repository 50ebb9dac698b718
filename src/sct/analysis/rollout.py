"""Attention rollout's pure steps; they live in ``sct.models.attention.rollout`` (each attention module
applies its own), and this module keeps the old import path working."""

from sct.models.attention.rollout import (
    RESIDUAL,
    chunk_step,
    chunk_to_dense,
    dense_step,
    frame_weights,
    head_average,
    heatmaps,
    layer_map,
    pool_matrix,
    pool_step,
    rollout_dense,
    row_normalize,
    shift_step,
    temporal_step,
    time_step,
)

__all__ = ["RESIDUAL", "chunk_step", "chunk_to_dense", "dense_step", "frame_weights", "head_average", "heatmaps",
           "layer_map", "pool_matrix", "pool_step", "rollout_dense", "row_normalize", "shift_step", "temporal_step",
           "time_step"]
