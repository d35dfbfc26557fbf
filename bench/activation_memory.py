"""Why DRAEM-CutPaste needs ~47 GB on a GPU at paper size: the bytes autograd keeps for the backward pass.

    .venv/bin/python bench/activation_memory.py                    # paper widths 128/128 at 128x128, batch 64
    .venv/bin/python bench/activation_memory.py --width 16 --size 32 96

One forward pass and the DRAEM focal loss of DraemCutPasteModel on --probe images (CPU), with every tensor saved
for backward counted by torch.autograd.graph.saved_tensors_hooks; scaled to --batch. An upper bound: a tensor
saved by two operations counts twice. Weights, gradients and AdamW's two states are added as 4 x parameters.
"""

import argparse

import torch

from hdmap_train.models.components import DraemFocalLoss
from hdmap_train.models.draem_cutpaste.torch_model import DraemCutPasteModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=128, help="reconstructive and discriminative width (paper: 128)")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 128], help="image height and width")
    parser.add_argument("--batch", type=int, default=64, help="the training batch the figure is scaled to")
    parser.add_argument("--probe", type=int, default=2, help="images actually run")
    args = parser.parse_args()
    model = DraemCutPasteModel(args.width, args.width)
    parameters = sum(p.numel() for p in model.parameters())
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    images = torch.rand(args.probe, 1, *args.size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        reconstruction, logits = model.reconstruct_and_segment(images)
        DraemFocalLoss(0.9)(images, reconstruction, (images > 0.9).float(), logits)
    per_image = sum(saved) / args.probe
    states = 4 * parameters * 4  # fp32 weights, gradients, AdamW exp_avg and exp_avg_sq
    print(f"DRAEM-CutPaste width {args.width}, {args.size[0]}x{args.size[1]}: {parameters / 1e6:.1f} M parameters")
    print(f"saved for backward: {per_image / 2**20:.1f} MiB per image, {args.batch * per_image / 2**30:.2f} GiB at batch {args.batch}")
    print(f"weights + gradients + AdamW states: {states / 2**30:.2f} GiB; total {(args.batch * per_image + states) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
