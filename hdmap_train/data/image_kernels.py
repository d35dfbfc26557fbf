"""Batched image kernels of DRAEM's synthetic anomalies (hdmap_train.data.perlin): Perlin noise, affine warps and
the colour operations, each on a whole batch with per-image parameters, reproducing torchvision's float-image
kernels (clamps to [0, 1], PIL's equalisation table, the uint8 round trip of equalize as a CPU cast does).
"""

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
GRID = 33  # gradient grid per image: scales up to 2**5 = 32 cells, 33 vertices


def next_pow2(value: int) -> int:
    """The smallest power of 2 at least `value` (the Perlin grid is padded to it)."""
    return 1 << max(0, math.ceil(math.log2(value)))


def perlin_fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's fade curve 6t^5 - 15t^4 + 10t^3."""
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(scales: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Anomalib's generate_perlin_noise for N images at once: (N, H, W).

    scales: (N, 2) cells along y and x (powers of 2 up to 32); angles: (N, 33, 33) gradient angles.
    The noise is sum over the 4 cell corners of fade weights x (gradient . offset); written as
    rows (N, H, 2 x 33) @ columns (N, 2 x 33, W), one batched matrix product.
    """
    dtype = angles.dtype
    vertex = torch.arange(GRID, device=angles.device, dtype=dtype)

    def axis(size: int, padded: int, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        position = torch.arange(size, device=angles.device, dtype=dtype) * (scale[:, None] / padded)  # (N, size)
        cell = position.floor()
        offset = position - cell
        fade = perlin_fade(offset)
        first = (vertex == cell[..., None]).to(dtype)  # (N, size, 33): the cell's first vertex
        second = (vertex == cell[..., None] + 1).to(dtype)
        weight = first * (1 - fade)[..., None] + second * fade[..., None]
        weighted_offset = first * ((1 - fade) * offset)[..., None] + second * (fade * (offset - 1))[..., None]
        return weight, weighted_offset

    row_weight, row_offset = axis(height, next_pow2(height), scales[:, 0])
    col_weight, col_offset = axis(width, next_pow2(width), scales[:, 1])
    rows = torch.cat([row_offset @ torch.cos(angles), row_weight @ torch.sin(angles)], dim=2)  # (N, H, 66)
    cols = torch.cat([col_weight, col_offset], dim=2).transpose(1, 2)  # (N, 66, W)
    return math.sqrt(2.0) * (rows @ cols)


def affine_grid(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Torchvision's _affine_grid for per-image inverse matrices (N, 2, 3) in centred pixel units."""
    dtype, device = matrix.dtype, matrix.device
    xs = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, width, device=device, dtype=dtype)
    ys = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, height, device=device, dtype=dtype)
    base = torch.stack(
        [xs.expand(height, width), ys[:, None].expand(height, width), torch.ones(height, width, device=device, dtype=dtype)],
        dim=-1,
    )  # (H, W, 3)
    scale = torch.tensor([0.5 * width, 0.5 * height], device=device, dtype=dtype)
    return (base.view(1, -1, 3) @ (matrix.transpose(1, 2) / scale)).view(-1, height, width, 2)


def inverse_affine(angle: torch.Tensor, shear: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Torchvision's inverse affine matrix (N, 2, 3) for F.affine(angle, shear=[shear_x, 0]).

    angle in degrees; shear is tan(shear_x), applied about the top-left corner (AutoAugment's ShearX)
    when non-zero and about the centre otherwise (the two coincide without shear).
    """
    rot = torch.deg2rad(angle)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # _get_inverse_affine_matrix with sy = 0: a = cos, b = -cos*tan(sx) - sin, c = sin, d = -sin*tan(sx) + cos
    a, b, c, d = cos, -cos * shear - sin, sin, -sin * shear + cos
    zero = torch.zeros_like(angle)
    cx, cy = zero - 0.5 * width * (shear != 0), zero - 0.5 * height * (shear != 0)
    m0, m1, m3, m4 = d, -b, -c, a
    m2 = m0 * -cx + m1 * -cy + cx
    m5 = m3 * -cx + m4 * -cy + cy
    return torch.stack([torch.stack([m0, m1, m2], -1), torch.stack([m3, m4, m5], -1)], dim=1)


def warp(images: torch.Tensor, matrix: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
    """Torchvision's affine on (N, C, H, W): bilinear with fill 0 (its fill mask), or nearest where `nearest` (N,)."""
    n, channels, height, width = images.shape
    grid = affine_grid(matrix.to(images.dtype), height, width)
    size = torch.tensor([width, height], device=images.device, dtype=images.dtype)
    pixel = ((grid + 1) * size - 1) / 2
    snapped = (2 * torch.round(pixel) + 1) / size - 1  # nearest = bilinear at the nearest pixel centre
    grid = torch.where(nearest.view(n, 1, 1, 1), snapped, grid)
    ones = torch.ones(n, 1, height, width, device=images.device, dtype=images.dtype)
    out = F.grid_sample(torch.cat([images, ones], dim=1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, :channels] * out[:, channels:]


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Torchvision's equalize_image on float images (through uint8), per image and channel."""
    n, channels, height, width = images.shape
    flat = (images * (256.0 - 1e-3)).to(torch.int32).bitwise_and(255).view(n * channels, -1).long()
    hist = torch.zeros(n * channels, 256, dtype=torch.int32, device=images.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.int32))
    cum = hist.cumsum(1)
    last = cum.argmax(1, keepdim=True)
    non_max = flat.shape[1] - hist.gather(1, last)
    step = non_max.div(255, rounding_mode="floor")
    lut = (cum[:, :-1] + step // 2).div(step.clamp(min=1), rounding_mode="floor").clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], dim=1)
    out = torch.where(step != 0, lut.gather(1, flat), flat)
    return (out.to(images.dtype) / 255.0).view(n, channels, height, width)


def sharpen(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Torchvision's adjust_sharpness with a per-image factor (N,)."""
    n, channels, height, width = images.shape
    if height <= 2 or width <= 2:
        return images
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=images.dtype, device=images.device)
    blurred = F.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
    inner = images[..., 1:-1, 1:-1]
    inner = inner + (1.0 - factor.view(n, 1, 1, 1)) * (blurred - inner)
    return F.pad(inner, (1, 1, 1, 1)).where(interior(height, width, images.device), images).clamp(0, 1)


def interior(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H, W) mask of the pixels that are not on the border (sharpen leaves the border as it is)."""
    inside = torch.zeros(height, width, dtype=torch.bool, device=device)
    inside[1:-1, 1:-1] = True
    return inside


def grey(images: torch.Tensor) -> torch.Tensor:
    """Torchvision's grayscale (N, 1, H, W) of RGB images, or of a 1-channel stand-in for a grey RGB image."""
    if images.shape[1] == 3:
        r, g, b = images.unbind(1)
        return (r * GREY[0] + g * GREY[1] + b * GREY[2]).unsqueeze(1)
    return images * sum(GREY)


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """Torchvision's rgb_to_hsv."""
    r, g, _ = image.unbind(dim=-3)
    minc, maxc = torch.aminmax(image, dim=-3)
    eqc = maxc == minc
    channels_range = maxc - minc
    ones = torch.ones_like(maxc)
    s = channels_range / torch.where(eqc, ones, maxc)
    divisor = torch.where(eqc, ones, channels_range).unsqueeze(dim=-3)
    rc, gc, bc = ((maxc.unsqueeze(dim=-3) - image) / divisor).unbind(dim=-3)
    neq_r = maxc != r
    eq_g = maxc == g
    hg = (rc + 2.0 - bc) * (eq_g & neq_r)
    hr = (bc - gc) * ~neq_r
    hb = (gc + 4.0 - rc) * (neq_r & ~eq_g)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """Torchvision's hsv_to_rgb."""
    h, s, v = img.unbind(dim=-3)
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(dtype=torch.int64).remainder(6)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((s * f + 1.0 - s) * v).clamp(0.0, 1.0)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=img.device)
    return vpqt.gather(-3, select[:, i].moveaxis(0, -3))


def adjust_hue(images: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Torchvision's adjust_hue (RGB float images) with a per-image hue shift (N,)."""
    hsv = rgb_to_hsv(images)
    h, s, v = hsv.unbind(dim=-3)
    h = (h + hue.view(-1, 1, 1)).remainder(1.0)
    return hsv_to_rgb(torch.stack((h, s, v), dim=-3))
