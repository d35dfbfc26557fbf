"""DRAEM-SevNet network: anomalib's DRAEM sub-networks plus a severity head on the discriminative encoder."""

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from anomalib.data import InferenceBatch
from torch import nn
from torch.nn import functional as F

from hdmap_train.models.components import anomaly_map_and_score, draem_subnetworks

HEAD_MODES = ("single_scale", "multi_scale")
POOLING_TYPES = ("gap", "spatial_aware")
SCORE_COMBINATIONS = ("simple_average", "weighted_average", "maximum")

# Discriminative encoder activations act2..act6 have these multiples of the base width.
SCALE_WIDTHS = {"act2": 2, "act3": 4, "act4": 8, "act5": 8, "act6": 8}
# Channels each scale is reduced to in multi_scale + spatial_aware mode (the seed's values).
SPATIAL_CHANNELS = {"act2": 32, "act3": 64, "act4": 128, "act5": 128, "act6": 128}


class SevNetOutput(NamedTuple):
    """Everything DRAEM-SevNet computes for a batch (eval mode)."""

    reconstruction: torch.Tensor  # (B, C, H, W)
    mask_logits: torch.Tensor  # (B, 2, H, W)
    raw_severity: torch.Tensor  # (B,) head output clamped at 0
    normalized_severity: torch.Tensor  # (B,) raw_severity / severity_max, clamped to [0, 1]
    mask_score: torch.Tensor  # (B,) max of the anomaly map
    final_score: torch.Tensor  # (B,) mask_score and normalized_severity combined
    anomaly_map: torch.Tensor  # (B, H, W) softmax(mask_logits)[:, 1]


def mlp(in_dim: int, widths: tuple[int, int], dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout x2, then Linear to one raw (unbounded) output."""
    return nn.Sequential(
        nn.Linear(in_dim, widths[0]), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(widths[0], widths[1]), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(widths[1], 1),
    )


class SpatialReducer(nn.Module):
    """Optional spatial attention (1x1 conv -> sigmoid, multiplied in), Conv3x3 + ReLU, adaptive pool to s x s."""

    def __init__(self, in_channels: int, out_channels: int, spatial_size: int, attention: bool) -> None:
        """Build the reducer of one scale.

        Args:
            in_channels: channels of the encoder activation.
            out_channels: channels after the 3x3 convolution.
            spatial_size: s of the s x s adaptive pooling.
            attention: whether a 1x1-conv sigmoid attention map multiplies the activation first.
        """
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(in_channels, 1, kernel_size=1), nn.Sigmoid()) if attention else None
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(spatial_size)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, out_channels * s * s) flattened features of a (B, in_channels, H, W) activation."""
        if self.attention is not None:
            features = features * self.attention(features)
        return self.reduce(features).flatten(1)


class SeverityHead(nn.Module):
    """One raw severity value per image from discriminative-encoder activations.

    gap pooling: global average pooling, then MLP [D -> h -> h/2 -> 1]. spatial_aware pooling: per scale
    optional attention + Conv3x3 + adaptive pooling to spatial_size^2, then MLP; [h -> h/2 -> 1] for
    single_scale, [2h -> h -> 1] for multi_scale. No output activation. Linear layers: Xavier-uniform
    weights, zero bias.
    """

    def __init__(
        self,
        discriminative_width: int,
        mode: str = "single_scale",
        pooling: str = "gap",
        hidden_dim: int = 128,
        spatial_size: int = 4,
        spatial_attention: bool = True,
        dropout: float = 0.1,
    ) -> None:
        """Build the reducers (spatial_aware) and the MLP.

        Args:
            discriminative_width: base width of the discriminative network (its activations' widths follow).
            mode: single_scale (act6) or multi_scale (act2..act6).
            pooling: gap or spatial_aware.
            hidden_dim: h of the MLP widths.
            spatial_size: spatial_aware: pooled size s (s x s per scale).
            spatial_attention: spatial_aware: an attention map per scale.
            dropout: dropout after each hidden MLP layer.
        """
        super().__init__()
        if mode not in HEAD_MODES or pooling not in POOLING_TYPES:
            raise ValueError(f"mode must be one of {HEAD_MODES} and pooling one of {POOLING_TYPES}")
        self.scales = ["act6"] if mode == "single_scale" else list(SCALE_WIDTHS)
        self.pooling = pooling
        channels = {name: SCALE_WIDTHS[name] * discriminative_width for name in self.scales}
        if pooling == "gap":
            self.reducers = None
            self.mlp = mlp(sum(channels.values()), (hidden_dim, hidden_dim // 2), dropout)
        else:
            out = {name: hidden_dim for name in self.scales} if mode == "single_scale" else SPATIAL_CHANNELS
            self.reducers = nn.ModuleDict(
                {name: SpatialReducer(channels[name], out[name], spatial_size, spatial_attention) for name in self.scales}
            )
            widths = (hidden_dim, hidden_dim // 2) if mode == "single_scale" else (2 * hidden_dim, hidden_dim)
            self.mlp = mlp(sum(out.values()) * spatial_size**2, widths, dropout)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, activations: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) raw severity from {"act1": ..., "act6": ...}."""
        if self.reducers is None:
            pooled = [F.adaptive_avg_pool2d(activations[name], 1).flatten(1) for name in self.scales]
        else:
            pooled = [self.reducers[name](activations[name]) for name in self.scales]
        return self.mlp(torch.cat(pooled, dim=1)).squeeze(1)


def combine_scores(mask_score: torch.Tensor, severity: torch.Tensor, combination: str, weight: float) -> torch.Tensor:
    """Image score from the mask score and the normalised severity.

    simple_average: (mask + severity) / 2; weighted_average: (1 - weight) * mask + weight * severity;
    maximum: max(mask, severity).
    """
    if combination == "simple_average":
        return (mask_score + severity) / 2
    if combination == "weighted_average":
        return (1 - weight) * mask_score + weight * severity
    if combination == "maximum":
        return torch.maximum(mask_score, severity)
    raise ValueError(f"score combination must be one of {SCORE_COMBINATIONS}, got {combination!r}")


class DraemSevNetModel(nn.Module):
    """DRAEM reconstructive + discriminative sub-networks and a SeverityHead.

    Training mode returns (reconstruction, mask_logits, head output); eval mode returns anomalib's
    InferenceBatch (pred_score = final_score, anomaly_map); `outputs` gives every value.
    """

    def __init__(
        self,
        reconstructive_width: int = 128,
        discriminative_width: int = 64,
        channels: int = 3,
        head: Mapping[str, Any] | None = None,
        severity_max: float = 1.0,
        score_combination: str = "simple_average",
        severity_weight_for_combination: float = 0.5,
    ) -> None:
        """Build the sub-networks and the head.

        Args:
            reconstructive_width: base width of the reconstructive sub-network.
            discriminative_width: base width of the discriminative sub-network (and of the head's inputs).
            channels: image channels used (3 = the datamodule's repeated channels, as in the seed; 1 = channel 0).
            head: keyword arguments of SeverityHead (mode, pooling, hidden_dim, spatial_size, spatial_attention).
            severity_max: normalised severity = raw severity / severity_max, clamped to [0, 1].
            score_combination: how mask score and normalised severity combine (see combine_scores).
            severity_weight_for_combination: the severity's weight for weighted_average.
        """
        super().__init__()
        if score_combination not in SCORE_COMBINATIONS:
            raise ValueError(f"score combination must be one of {SCORE_COMBINATIONS}, got {score_combination!r}")
        self.channels = channels
        self.reconstructive_subnetwork, self.discriminative_subnetwork = draem_subnetworks(
            channels, reconstructive_width, discriminative_width
        )
        self.severity_head = SeverityHead(discriminative_width, **(head or {}))
        self.severity_max = severity_max
        self.score_combination = score_combination
        self.severity_weight_for_combination = severity_weight_for_combination

    def networks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mask_logits, head output) in any mode."""
        image = images[:, : self.channels]
        reconstruction = self.reconstructive_subnetwork(image)
        discriminative = self.discriminative_subnetwork
        acts = discriminative.encoder_segment(torch.cat([image, reconstruction], dim=1))
        logits = discriminative.decoder_segment(*acts)
        severity = self.severity_head({f"act{i}": act for i, act in enumerate(acts, start=1)})
        return reconstruction, logits, severity

    def outputs(self, images: torch.Tensor) -> SevNetOutput:
        """All values for a batch of images."""
        return self.summarize(*self.networks(images))

    def summarize(self, reconstruction: torch.Tensor, logits: torch.Tensor, severity: torch.Tensor) -> SevNetOutput:
        """Scores from the network outputs; raw severity = max(head, 0), normalised = min(raw / severity_max, 1)."""
        anomaly_map, mask_score = anomaly_map_and_score(logits)
        raw = severity.clamp_min(0)
        normalized = (raw / self.severity_max).clamp(0, 1)
        final = combine_scores(mask_score, normalized, self.score_combination, self.severity_weight_for_combination)
        return SevNetOutput(reconstruction, logits, raw, normalized, mask_score, final, anomaly_map)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | InferenceBatch:
        """(reconstruction, mask_logits, head output) in training mode, anomalib's InferenceBatch in eval mode."""
        if self.training:
            return self.networks(images)
        out = self.outputs(images)
        return InferenceBatch(pred_score=out.final_score, anomaly_map=out.anomaly_map)
