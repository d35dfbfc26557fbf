"""DRAEM's Perlin-noise anomalies for a whole batch at once, on the batch's device.

`BatchedPerlinAnomalyGenerator` has the call contract of anomalib's `PerlinAnomalyGenerator`
(``augmented, mask = generator(images)``, (B, C, H, W) -> (B, C, H, W), (B, 1, H, W)) and draws from
the same distribution, but anomalib's generator makes one image at a time in a Python loop (with
``.item()`` calls, i.e. host synchronisations on a GPU), while this one draws every random parameter
for the whole batch as tensors on the images' device and applies each step to the batch (where it differs
from anomalib, invisibly in the statistics: README, "Code map"):

- each image is anomalous with probability ``probability`` (0.5);
- Perlin noise with per-image scales 2**randint(0, 6) in y and x on the next-power-of-2 padded grid,
  cropped to H x W; anomalib's gradient lerps are written as one batched matrix product (the same sum,
  so the same noise up to float rounding);
- anomalib's fix for noise with nothing above 0.5 (rescaled to [-1, 1]);
- a per-image rotation ~ U(rotation_range) degrees about the centre, bilinear, fill 0, with
  torchvision's conventions (its affine grid and its fill mask);
- mask = noise > 0.5; anomalous images whose mask came out empty get new noise: up to
  ``retry_rounds`` rounds (anomalib: 10 tries per image), each redrawing up to ``ceil(B / 4)`` of
  them (a fixed number, so no shape depends on the data);
- anomaly source = rotated noise * 0.5 + 0.25 (every channel), or a texture drawn uniformly from
  ``anomaly_source_path`` (all textures read once per device, dtype and size, resized like anomalib);
- 3 distinct augmenters of anomalib's 10, chosen uniformly per image in random order, each with per-image
  parameters (hdmap_train.data.augmenter_steps says which);
- blend factor beta ~ U(blend_factor) per image (or the float given);
  augmented = image * (1 - mask) + beta * perturbation + (1 - beta) * image * mask.

All randomness comes from torch's generator of the images' device (validation seeds it inside
``torch.random.fork_rng``). On the CPU, where there is no device to wait for, each transform is
computed only for the images that drew it (boolean indexing); elsewhere every transform is computed
for the whole batch and chosen per image with ``torch.where``, so nothing waits for the device.
``compact`` forces either (both give the same images from the same generator state, except that the
compact path stops redrawing empty masks as soon as none is left).
"""

import math
from pathlib import Path

import torch
from torchvision import io
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from hdmap_train.data.augmenter_steps import (
    AA_POLICY,
    AFFINE,
    AUGMENTERS,
    AUTOCONTRAST,
    BRIGHT,
    CONTRAST,
    EQUALIZE,
    HUE,
    INVERT,
    NONE,
    PERMUTE,
    POSTERIZE,
    SAT,
    SHARP,
    SOLARIZE,
    Steps,
    affine_step,
    autoaugment_table,
)
from hdmap_train.data.image_kernels import (
    GREY,
    GRID,
    adjust_hue,
    equalize,
    grey,
    inverse_affine,
    perlin_noise,
    sharpen,
    warp,
)


class BatchedPerlinAnomalyGenerator(torch.nn.Module):
    """DRAEM's synthetic anomalies (anomalib's PerlinAnomalyGenerator), drawn for the whole batch on its device."""

    def __init__(
        self,
        anomaly_source_path: Path | str | None = None,
        probability: float = 0.5,
        blend_factor: float | tuple[float, float] = (0.2, 1.0),
        rotation_range: tuple[float, float] = (-90, 90),
        retry_rounds: int = 10,
        compact: bool | None = None,
    ) -> None:
        """Keep the parameters; list the texture files (read on first use).

        Args:
            anomaly_source_path: folder of texture images (searched recursively); None = Perlin noise textures.
            probability: chance that an image gets an anomaly.
            blend_factor: beta, a float or a (lo, hi) range drawn per image.
            rotation_range: range of the noise rotation in degrees.
            retry_rounds: rounds of redrawing empty masks (each up to ceil(B / 4) images).
            compact: compute each transform only for the images that drew it (True), or for all and
                select (False); None = True on the CPU, False elsewhere.
        """
        super().__init__()
        self.probability = probability
        self.blend_factor = blend_factor
        self.rotation_range = (float(rotation_range[0]), float(rotation_range[1]))
        self.retry_rounds = retry_rounds
        self.compact = compact
        # anomalib draws its solarize threshold here, from the CPU generator: keep that draw (and the stream after it)
        self.solarize_threshold = float(torch.empty(1).uniform_(32 / 255, 128 / 255).item())
        self.texture_paths: list[Path] = []
        if anomaly_source_path is not None:
            for extension in IMG_EXTENSIONS:
                self.texture_paths.extend(Path(anomaly_source_path).rglob("*" + extension))
            self.texture_paths.sort()
        self._textures: dict[tuple, torch.Tensor] = {}
        self._aa = autoaugment_table()
        self._aa_on: dict[str, tuple[torch.Tensor, ...]] = {}

    def _is_compact(self, device: torch.device) -> bool:
        return device.type == "cpu" if self.compact is None else self.compact

    def textures(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """All texture images (N, 3, H, W), read and resized once per device, dtype and size."""
        key = (str(device), dtype, height, width)
        if key not in self._textures:
            images = []
            for path in self.texture_paths:
                image = io.read_image(str(path), mode=io.ImageReadMode.RGB).float() / 255.0
                if image.shape[-2:] != (height, width):
                    image = v2.functional.resize(image, [height, width], antialias=True)
                images.append(image)
            self._textures[key] = torch.stack(images).to(device=device, dtype=dtype)
        return self._textures[key]

    def _per_image(self, x: torch.Tensor, active: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        """fn(x, *params) where `active` (N,), x elsewhere: on the active images only (compact) or all then where."""
        if self._compact_now:
            index = active.nonzero().squeeze(1)
            if index.numel() == 0:
                return x
            return x.index_copy(0, index, fn(x[index], *(p[index] for p in params)))
        return torch.where(active.view(-1, 1, 1, 1), fn(x, *params), x)

    def noise(self, n: int, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Rotated Perlin noise (n, H, W), with anomalib's fix for noise never above 0.5."""
        scales = 2.0 ** torch.randint(0, 6, (n, 2), device=device).to(dtype)
        angles = 2 * math.pi * torch.rand(n, GRID, GRID, device=device, dtype=dtype)
        noise = perlin_noise(scales, angles, height, width)
        low, high = noise.amin(dim=(1, 2), keepdim=True), noise.amax(dim=(1, 2), keepdim=True)
        spread = high - low
        rescaled = torch.where(spread > 0, (noise - low) / torch.where(spread > 0, spread, 1), 0.0) * 2 - 1
        noise = torch.where((high > 0.5), noise, rescaled)
        lo, hi = self.rotation_range
        angle = lo + (hi - lo) * torch.rand(n, device=device, dtype=dtype)
        matrix = inverse_affine(angle, torch.zeros_like(angle), height, width)
        return warp(noise.unsqueeze(1), matrix, torch.zeros(n, dtype=torch.bool, device=device)).squeeze(1)

    def masked_noise(self, anomalous: torch.Tensor, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """Noise (B, H, W) with a non-empty mask (> 0.5) for the anomalous images, redrawn in fixed-size rounds."""
        batch, device = len(anomalous), anomalous.device
        noise = self.noise(batch, height, width, device, dtype)
        slots = min(batch, -(-batch // 4))
        for _ in range(self.retry_rounds):
            empty = anomalous & ~(noise > 0.5).flatten(1).any(1)
            if self._compact_now and not empty.any():  # on the CPU a check costs nothing (no device to wait for)
                break
            index = torch.argsort(empty.to(torch.int8), descending=True, stable=True)[:slots]
            fresh = self.noise(slots, height, width, device, dtype)
            redo = empty[index].view(-1, 1, 1)
            noise = noise.index_copy(0, index, torch.where(redo, fresh, noise[index]))
        return noise

    def _draw_steps(self, batch: int, channels: int, device: torch.device, dtype: torch.dtype) -> Steps:
        """3 augmenters per image (distinct, random order), expanded to 6 primitive sub-steps with parameters."""
        chosen = torch.argsort(torch.rand(batch, AUGMENTERS, device=device), dim=1)[:, :3]  # (B, 3)

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(batch, 3, device=device, dtype=torch.float64)

        # one column per augmenter (its parameters for each of the 3 slots; only the chosen one is used)
        contrast, bright = uniform(0.5, 2.0), uniform(0.8, 1.2)
        saturation, hue = uniform(0.5, 1.5), uniform(-50 / 360, 50 / 360)
        hue_first = torch.rand(batch, 3, device=device) < 0.5
        angle = uniform(-45.0, 45.0)
        if str(device) not in self._aa_on:  # copied to each device once (a copy to a GPU is no host sync, but costs)
            self._aa_on[str(device)] = tuple(t.to(device) for t in self._aa)
        aa_ops, aa_probs, aa_mags, aa_signed = self._aa_on[str(device)]
        policy = torch.randint(len(AA_POLICY), (batch, 3), device=device)
        applied = torch.rand(batch, 3, 2, device=device, dtype=torch.float64) <= aa_probs[policy]
        negative = (torch.rand(batch, 3, 2, device=device) <= 0.5) & aa_signed[policy]
        aa_op = torch.where(applied, aa_ops[policy], NONE)
        aa_value = torch.where(negative, -aa_mags[policy], aa_mags[policy])
        aa_value = torch.where((aa_op == SAT) | (aa_op == CONTRAST) | (aa_op == SHARP), 1.0 + aa_value, aa_value)
        perm = torch.argsort(torch.rand(batch, 3, channels, device=device), dim=2)

        zero = torch.zeros(batch, 3, device=device, dtype=torch.float64)
        none = torch.full((batch, 3), NONE, device=device)
        # (primitive, parameter) of sub-step 0 and 1 for each of the 10 augmenters: (10, B, 3)
        op0 = torch.stack([
            none + CONTRAST, none + BRIGHT, none + SHARP,
            torch.where(hue_first, HUE, SAT), none + SOLARIZE, none + POSTERIZE, none + INVERT,
            aa_op[..., 0], none + EQUALIZE, none + AFFINE,
        ])
        value0 = torch.stack([
            contrast, bright, zero + 2.0, torch.where(hue_first, hue, saturation), zero + self.solarize_threshold,
            zero + 16.0, zero, aa_value[..., 0], zero, angle,
        ])
        op1 = torch.stack([
            none, none + PERMUTE, none, torch.where(hue_first, SAT, HUE), none, none, none, aa_op[..., 1], none, none,
        ])
        value1 = torch.stack([zero, zero, zero, torch.where(hue_first, saturation, hue), zero, zero, zero,
                              aa_value[..., 1], zero, zero])
        pick = chosen.unsqueeze(0)
        op = torch.stack([op0.gather(0, pick)[0], op1.gather(0, pick)[0]], dim=2).view(batch, 6)
        value = torch.stack([value0.gather(0, pick)[0], value1.gather(0, pick)[0]], dim=2).view(batch, 6)
        nearest = (chosen == 7).repeat_interleave(2, dim=1)  # AutoAugment resamples nearest-neighbour
        return Steps(op, value.to(dtype), perm, nearest)

    def _pointwise(self, x: torch.Tensor, op: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, (grey) saturation, invert, autocontrast, solarize, posterize: per-image parameters."""
        n = len(x)
        op, f = op.view(n, 1, 1, 1), value.view(n, 1, 1, 1)
        one = torch.ones_like(f)
        mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
        low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        flat = high == low
        low = torch.where(flat, 0.0, low)
        spread = torch.where(flat, 1.0, high - low)
        grey_sat = f + (1 - f) * sum(GREY)
        scale = torch.where(op == BRIGHT, f, one)
        scale = torch.where(op == CONTRAST, f, scale)
        scale = torch.where(op == SAT, grey_sat, scale)
        scale = torch.where(op == INVERT, -one, scale)
        scale = torch.where(op == AUTOCONTRAST, 1 / spread, scale)
        shift = torch.where(op == CONTRAST, (1 - f) * mean, 0 * f)
        shift = torch.where(op == INVERT, one, shift)
        shift = torch.where(op == AUTOCONTRAST, -low / spread, shift)
        clamped = (op == BRIGHT) | (op == CONTRAST) | (op == SAT) | (op == AUTOCONTRAST)
        inf = torch.full_like(f, math.inf)
        y = torch.clamp(x * scale + shift, torch.where(clamped, 0.0, -inf), torch.where(clamped, 1.0, inf))
        y = torch.where(y >= torch.where(op == SOLARIZE, f, inf), 1 - y, y)
        levels = torch.where(op == POSTERIZE, f, one)
        return torch.where(op == POSTERIZE, torch.clamp(torch.floor(y * levels), 0 * levels, levels - 1) / levels, y)

    def _colour(self, x: torch.Tensor, op: torch.Tensor, value: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Saturation, hue and channel permutation of RGB images."""
        f = value.view(-1, 1, 1, 1)
        saturated = torch.clamp(f * x + (1 - f) * grey(x), 0, 1)
        y = torch.where((op == SAT).view(-1, 1, 1, 1), saturated, x)
        y = torch.where((op == HUE).view(-1, 1, 1, 1), adjust_hue(y, value), y)
        permuted = y.gather(1, perm.view(-1, 3, 1, 1).expand_as(y))
        return torch.where((op == PERMUTE).view(-1, 1, 1, 1), permuted, y)

    def augment(self, source: torch.Tensor, steps: Steps, grey: bool) -> torch.Tensor:
        """Apply each image's 6 primitive sub-steps (2 per augmenter)."""
        pointwise = (BRIGHT, CONTRAST, INVERT, AUTOCONTRAST, SOLARIZE, POSTERIZE) + ((SAT,) if grey else ())
        pointwise = torch.tensor(pointwise, device=source.device)
        x = source
        for step in range(steps.op.shape[1]):
            op, value = steps.op[:, step], steps.value[:, step]
            x = self._per_image(x, torch.isin(op, pointwise), self._pointwise, op, value)
            if not grey:
                colour = (op == SAT) | (op == HUE) | (op == PERMUTE)
                x = self._per_image(x, colour, self._colour, op, value, steps.perm[:, step // 2])
            if step % 2 == 0:  # sharpness only ever comes first (the sharpness augmenter, AutoAugment's 18th policy)
                x = self._per_image(x, op == SHARP, sharpen, value)
            x = self._per_image(x, op == EQUALIZE, equalize)
            x = self._per_image(x, (op == AFFINE) | (op == -AFFINE), affine_step, op, value, steps.nearest[:, step])
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented images (B, C, H, W), masks (B, 1, H, W)) for a batch (or one (C, H, W) image)."""
        if images.dim() == 3:
            augmented, mask = self.forward(images.unsqueeze(0))
            return augmented[0], mask[0]
        batch, channels, height, width = images.shape
        device, dtype = images.device, images.dtype
        self._compact_now = self._is_compact(device)
        anomalous = torch.rand(batch, device=device) < self.probability
        noise = self.masked_noise(anomalous, height, width, dtype)
        mask = ((noise > 0.5) & anomalous.view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
        if self.texture_paths:
            textures = self.textures(height, width, device, dtype)
            source = textures[torch.randint(len(textures), (batch,), device=device)]
        else:
            source = (noise * 0.5 + 0.25).unsqueeze(1)  # one grey channel, broadcast to C at the end
        steps = self._draw_steps(batch, source.shape[1], device, dtype)
        grey = not self.texture_paths
        if self._compact_now:  # only the anomalous images
            rows = anomalous.nonzero().squeeze(1)
            steps = Steps(steps.op[rows], steps.value[rows], steps.perm[rows], steps.nearest[rows])
            augmented_source = source.new_zeros((batch, *source.shape[1:]))
            augmented_source = augmented_source.index_copy(0, rows, self.augment(source[rows], steps, grey))
        else:
            augmented_source = self.augment(source, steps, grey)
        if isinstance(self.blend_factor, (int, float)):
            beta = torch.full((batch,), float(self.blend_factor), device=device, dtype=dtype)
        else:
            lo, hi = self.blend_factor
            beta = lo + (hi - lo) * torch.rand(batch, device=device, dtype=dtype)
        beta = beta.view(-1, 1, 1, 1)
        blended = beta * augmented_source + (1 - beta) * images
        return torch.where(mask, blended, images), mask.to(dtype)
