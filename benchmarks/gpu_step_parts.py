"""Where a GPU step's time goes, by operator and input shape, and what its image-side parts cost
alone: torch profiler over one batch of every objective (511 images, inception4c, 24 steps at
--size, 16 of them with redirected ReLU gradients), its operators grouped by input shape; then
the image pipeline's parts timed alone, forward and backward, at the same batch and side.

    python3 benchmarks/gpu_step_parts.py --size 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis.batch import image_specs  # noqa: E402
from atlasgen.featvis.device import repeatable  # noqa: E402
from atlasgen.featvis.fold import folded_batchnorm  # noqa: E402
from atlasgen.featvis.optimize import optimize_batch  # noqa: E402
from atlasgen.featvis.param import COLOR_MATRIX, _mix_colours  # noqa: E402
from atlasgen.hooks import eval_mode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402


def timed(fn, repeats: int = 20) -> float:  # noqa: ANN001
    fn()
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / repeats * 1e3


def parts(batch: int, size: int) -> None:
    """The image pipeline's parts alone, forward and backward, ms per call."""
    x = torch.rand(batch, 3, size, size, device="cuda", requires_grad=True)
    grad = torch.rand(batch, 3, size, size, device="cuda")
    matrix = COLOR_MATRIX.cuda()
    theta = torch.eye(2, 3, device="cuda").repeat(batch, 1, 1) * 0.9

    def backward(out: torch.Tensor) -> None:
        out.backward(grad if out.shape == grad.shape else torch.ones_like(out))
        x.grad = None

    cases = {
        "colour mix, matmul (as built)": lambda: backward(_mix_colours(matrix, x)),
        "colour mix, einsum": lambda: backward(torch.einsum("ck,bkhw->bchw", matrix, x)),
        "colour mix, 1x1 conv": lambda: backward(F.conv2d(x, matrix[:, :, None, None])),
        "grid_sample float64 (as built)": lambda: backward(F.grid_sample(
            x.double(), F.affine_grid(theta.double(), list(x.shape), align_corners=False), align_corners=False).float()),
        "grid_sample float32": lambda: backward(F.grid_sample(
            x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)),
        "to channels-last, float32": lambda: backward(x.contiguous(memory_format=torch.channels_last) * 1.0),
        "to channels-last, bf16": lambda: backward(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last) * 1.0),
        "irfft2 (B, 3, H, W/2+1)": lambda: backward(torch.fft.irfft2(torch.view_as_complex(
            torch.stack([x[..., : size // 2 + 1], x[..., : size // 2 + 1]], -1).contiguous()), s=(size, size))),
    }
    for name, fn in cases.items():
        print(f"{name:<34} {timed(fn):7.3f} ms forward and backward ({batch} x 3 x {size} x {size})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--layer", default="inception4c")
    parser.add_argument("--batch", type=int, default=511)
    args = parser.parse_args()
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    settings = VisSettings(steps=24, size=args.size, octaves=VisSettings().octaves[-1:])
    specs = image_specs(range(args.batch // 7), settings)
    probe = torch.rand(1, 3, args.size, args.size, device=device)
    with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, args.layer, probe):
        optimize_batch(model, args.layer, specs, settings, Preprocess(), device)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            optimize_batch(model, args.layer, specs, settings, Preprocess(), device)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.device_time_total > 0 and e.key.startswith("aten::")]
    total = sum(e.self_device_time_total for e in prof.key_averages() if e.self_device_time_total > 0)
    print(f"{args.layer}, {len(specs)} images, {args.size} px, 24 steps: {total / 1e3:.0f} ms of GPU time "
          f"({total / 24e3:.1f} ms a step, the final copy to the host included)")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:45]:
        shapes = ", ".join(str(tuple(s)) for s in e.input_shapes if s)[:110]
        print(f"{e.self_device_time_total / 1e3:8.1f} ms {e.count:5d}x  {e.key:<38} {shapes}")
    parts(len(specs), args.size)


if __name__ == "__main__":
    main()
