"""The augmenters of DRAEM's synthetic anomalies as primitive operations (hdmap_train.data.perlin): anomalib's 10
augmenters are sequences of these, AutoAugment's ImageNet policy (torchvision's) is a table of them, and `Steps`
holds what each image drew for each sub-step.

The 10 augmenters, each with per-image parameters: contrast (0.5, 2); photometric brightness (0.8, 1.2) + channel
permutation; sharpness 2; hue (+-50/360) / saturation (0.5, 1.5) in random order; solarize at one threshold drawn
at construction in (32/255, 128/255) (from torch's CPU generator, as anomalib does, so building the model leaves
the generator where anomalib's did); posterize 4 bits; invert; AutoAugment with the ImageNet policy (its 25
sub-policies, probabilities, magnitudes, random signs; nearest-neighbour rotate and shear); equalize; rotation
(-45, 45) bilinear fill 0.
"""

import torch

from hdmap_train.data.image_kernels import inverse_affine, warp

# Primitive operations (one per image per sub-step); the augmenters are sequences of these.
NONE, BRIGHT, CONTRAST, SAT, HUE, INVERT, AUTOCONTRAST, SOLARIZE, POSTERIZE, SHARP, EQUALIZE, AFFINE, PERMUTE = range(
    13
)
AUGMENTERS = 10

# AutoAugment's ImageNet policy (torchvision): (op, probability, magnitude index) pairs.
AA_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)
AA_BINS = 10
AA_OPS = {  # name -> (primitive, magnitude of each bin (parameter of the primitive), signed)
    "Posterize": (POSTERIZE, [2.0 ** round(8 - i / ((AA_BINS - 1) / 4)) for i in range(AA_BINS)], False),
    "Rotate": (AFFINE, [30.0 * i / (AA_BINS - 1) for i in range(AA_BINS)], True),
    "Solarize": (SOLARIZE, [1.0 - i / (AA_BINS - 1) for i in range(AA_BINS)], False),
    "AutoContrast": (AUTOCONTRAST, [0.0] * AA_BINS, False),
    "Equalize": (EQUALIZE, [0.0] * AA_BINS, False),
    "Color": (SAT, [0.9 * i / (AA_BINS - 1) for i in range(AA_BINS)], True),
    "Contrast": (CONTRAST, [0.9 * i / (AA_BINS - 1) for i in range(AA_BINS)], True),
    "Sharpness": (SHARP, [0.9 * i / (AA_BINS - 1) for i in range(AA_BINS)], True),
    "Invert": (INVERT, [0.0] * AA_BINS, False),
    "ShearX": (-AFFINE, [0.3 * i / (AA_BINS - 1) for i in range(AA_BINS)], True),  # -AFFINE: shear, not rotate
}


def autoaugment_table() -> tuple[torch.Tensor, ...]:
    """AutoAugment's policy as tensors (25, 2): op code, probability, magnitude, signed."""
    ops, probs, mags, signed = [], [], [], []
    for policy in AA_POLICY:
        for name, probability, index in policy:
            code, magnitudes, sign = AA_OPS[name]
            ops.append(code)
            probs.append(probability)
            mags.append(magnitudes[index or 0])
            signed.append(sign)
    shape = (len(AA_POLICY), 2)
    return (
        torch.tensor(ops).view(shape),
        torch.tensor(probs, dtype=torch.float64).view(shape),
        torch.tensor(mags, dtype=torch.float64).view(shape),
        torch.tensor(signed).view(shape),
    )


def affine_step(x: torch.Tensor, op: torch.Tensor, value: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
    """Rotation by `value` degrees (op AFFINE) or AutoAugment's shear by `value` (op -AFFINE)."""
    height, width = x.shape[-2:]
    shear = op == -AFFINE
    matrix = inverse_affine(torch.where(shear, 0.0, value), torch.where(shear, value, 0.0), height, width)
    return warp(x, matrix, nearest)


class Steps:
    """Per image and sub-step: the primitive (op) and its parameter; (N, S) tensors."""

    def __init__(self, op: torch.Tensor, value: torch.Tensor, perm: torch.Tensor, nearest: torch.Tensor) -> None:
        self.op, self.value, self.perm, self.nearest = op, value, perm, nearest
