"""Benchmark: atlasgen's feature visualization against torch-lucent 0.1.8, side by side in one run.

Same model (torchvision GoogLeNet, seeded random init, weights saved once to a file and loaded
fresh for each engine), same total steps, same final image size fed to the network, same
evaluation (the model on the final uint8 image without transforms, spatial mean of the channel).

Run with an interpreter that has both atlasgen's dependencies and torch-lucent, e.g.:
    /work/bench-venv/bin/python benchmarks/featvis_vs_lucent.py
See benchmarks/README-featvis.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis import visualize_channels  # noqa: E402
from atlasgen.featvis.batch import ImageSpec  # noqa: E402
from atlasgen.featvis.optimize import final_scores, octave_plan, to_uint8  # noqa: E402
from atlasgen.hooks import forward_layers  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402

log = logging.getLogger("featvis_bench")
CPU = torch.device("cpu")
PREPROCESS = Preprocess()  # ImageNet mean/std, as lucent's normalize()


def build_weights(path: Path) -> Path:
    """Seeded random-init GoogLeNet saved once, so every engine gets identical weights."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
        torch.save(model.state_dict(), path)
    return path


def load_model(path: Path, device: torch.device = CPU) -> torch.nn.Module:
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    model.load_state_dict(torch.load(path, map_location="cpu"))
    return model.to(device).eval()


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of matmul throughput, the machine's practical peak for dense compute: float32 through
    torch's default (MKL) and through oneDNN (which uses AVX-512 where MKL, on AMD CPUs, does
    not), and bfloat16, which atlasgen's network runs in on CPUs with native bf16."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=generator), torch.randn(n, n, generator=generator)
    bt = b.T.contiguous()
    a16, b16 = a.bfloat16(), b.bfloat16()
    candidates = {"float32 MKL": lambda: a @ b, "bfloat16": lambda: a16 @ b16}
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        candidates["float32 oneDNN"] = lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")
    peaks = {}
    for name, fn in candidates.items():
        fn()
        peaks[name] = 2 * n**3 / min(_timed(fn) for _ in range(repeats)) / 1e9
    return peaks


def cuda_matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> dict[str, float]:
    """The GPU's practical peak, GFLOP/s: best of `repeats` n x n products of random data (never
    zeros, which run faster), float32 (no TF32) and bfloat16, timed with CUDA events."""
    generator = torch.Generator(device=device).manual_seed(0)
    peaks = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, generator=generator).to(dtype)
        b = torch.randn(n, n, device=device, generator=generator).to(dtype)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1000)
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def forward_flops(model: torch.nn.Module, layer: str | None, size: int) -> int:
    """FLOPs of one image's forward pass, to `layer` (atlasgen) or through the whole model (lucent)."""
    x = torch.rand(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if layer is None:
            model(x)
        else:
            forward_layers(model, x, [layer])
    return counter.get_total_flops()


def step_flops(model: torch.nn.Module, layer: str, size: int) -> int:
    """FLOPs atlasgen executes per image-step: the forward pass to `layer` and the backward pass
    to the image only (its parameters need no gradient)."""
    x = torch.rand(1, 3, size, size, requires_grad=True)
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        with FlopCounterMode(display=False) as counter:
            forward_layers(model, x, [layer])[layer].sum().backward()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return counter.get_total_flops()


def evaluate(model: torch.nn.Module, layer: str, images: torch.Tensor, channels: list[int]) -> np.ndarray:
    """Spatial mean of each image's channel on the uint8-quantized image, no transforms."""
    quantized = torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).float() / 255
    specs = [ImageSpec(c, "channel") for c in channels]
    scores, _ = final_scores(model, layer, quantized, specs, VisSettings(objectives=("channel",)), PREPROCESS, CPU)
    return scores.numpy()


def run_lucent(weights: Path, layer: str, channels: list[int], steps: int, size: int, batched: bool,
               device: torch.device) -> tuple[float, torch.Tensor]:
    from lucent.optvis import objectives, param, render

    # Fresh: lucent leaves its hooks on the model. Lucent itself puts its images on cuda:0 when
    # there is a GPU and on the CPU otherwise, so `device` must be that one.
    model = load_model(weights, device)
    np.random.seed(0)
    torch.manual_seed(0)
    kwargs = dict(fixed_image_size=size, thresholds=(steps,), show_image=False, progress=False)
    start = time.perf_counter()
    if batched:
        objective = sum(objectives.channel(layer, c, batch=i) for i, c in enumerate(channels))
        images = render.render_vis(model, objective, param_f=lambda: param.image(size, batch=len(channels)), **kwargs)[-1]
    else:
        images = np.concatenate(
            [render.render_vis(model, objectives.channel(layer, c), param_f=lambda: param.image(size), **kwargs)[-1] for c in channels]
        )
    elapsed = time.perf_counter() - start
    return elapsed, torch.from_numpy(images).permute(0, 3, 1, 2)


def run_atlasgen(weights: Path, layer: str, channels: list[int], settings: VisSettings,
                 device: torch.device) -> tuple[float, torch.Tensor]:
    model = load_model(weights, device)
    start = time.perf_counter()
    result = visualize_channels(model, layer, channels, settings, PREPROCESS, device)
    elapsed = time.perf_counter() - start
    return elapsed, torch.from_numpy(result.images["channel"]).permute(0, 3, 1, 2).float() / 255


def spread(n_channels: int, count: int) -> list[int]:
    """`count` channels spread evenly over the layer (the branches of an inception block differ)."""
    return sorted({int(i * n_channels / count) for i in range(count)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["inception3a", "inception4c"])
    parser.add_argument("--lucent-channels", type=int, default=8)
    parser.add_argument("--atlasgen-channels", type=int, default=32, help="compared on the lucent channels, timed on all")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lucent-single-channels", type=int, default=2,
                        help="lucent's one-at-a-time mode is timed on the first N compared channels (0 = skip)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of atlasgen and lucent batch; fastest kept")
    parser.add_argument("--weights", type=Path, default=Path("/tmp/atlasgen-featvis-bench/googlenet_seed0.pt"))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda:0 (lucent runs on cuda:0 whenever CUDA exists)")
    args = parser.parse_args()
    device = torch.device(args.device)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(os.cpu_count() or 1)

    weights = build_weights(args.weights)
    reference = load_model(weights)
    peaks = matmul_gflops() if device.type == "cpu" else cuda_matmul_tflops(device)
    settings = VisSettings(objectives=("channel",), steps=args.steps, size=args.size)
    log.info("matmul peaks %s GFLOP/s; load average %s; torch %s, %d threads",
             {k: round(v, 1) for k, v in peaks.items()}, os.getloadavg(), torch.__version__, torch.get_num_threads())
    rows = []
    executed: dict[str, int] = {}
    for layer in args.layers:
        n_layer = forward_layers(reference, torch.rand(1, 3, args.size, args.size), [layer])[layer].shape[1]
        compared = spread(n_layer, args.lucent_channels)
        timed = sorted(set(compared) | set(spread(n_layer, args.atlasgen_channels)))
        # atlasgen FLOPs per image: its octave schedule, forward cut at the layer; lucent: the whole
        # model at the final size every step. x3 for forward + backward, as agreed for both.
        ours_flops = 3 * sum(o.steps * forward_flops(reference, layer, o.size) for o in octave_plan(settings))
        executed[layer] = sum(o.steps * step_flops(reference, layer, o.size) for o in octave_plan(settings))
        lucent_flops = 3 * args.steps * forward_flops(reference, None, args.size)

        engines: dict[str, tuple[float, int, np.ndarray, int]] = {}
        index = [timed.index(c) for c in compared]
        # Other jobs share this machine: alternate the engines and keep each one's fastest round.
        for _ in range(args.repeats):
            seconds, images = run_atlasgen(weights, layer, timed, settings, device)
            acts = evaluate(reference, layer, images[index], compared)
            engines["atlasgen"] = (min(seconds, engines.get("atlasgen", (np.inf,))[0]), len(timed), acts, ours_flops)
            log.info("%s atlasgen: %d channels in %.1f s", layer, len(timed), seconds)
            # The peak is measured again beside each round; the best (the quietest moment) is kept.
            again = matmul_gflops() if device.type == "cpu" else cuda_matmul_tflops(device)
            peaks = {k: max(v, peaks.get(k, 0.0)) for k, v in again.items()}
            seconds, images = run_lucent(weights, layer, compared, args.steps, args.size, batched=True, device=device)
            acts = evaluate(reference, layer, images, compared)
            engines["lucent batch"] = (min(seconds, engines.get("lucent batch", (np.inf,))[0]), len(compared), acts, lucent_flops)
            log.info("%s lucent batch: %d channels in %.1f s", layer, len(compared), seconds)
        if args.lucent_single_channels:
            subset = compared[: args.lucent_single_channels]
            seconds, images = run_lucent(weights, layer, subset, args.steps, args.size, batched=False, device=device)
            engines["lucent single"] = (seconds, len(subset), evaluate(reference, layer, images, subset), lucent_flops)
            log.info("%s lucent single: %d channels in %.1f s", layer, len(subset), seconds)
        rows.append((layer, compared, engines))
    print_table(rows, peaks, executed)


def print_table(rows: list, peaks: dict[str, float], executed: dict[str, int]) -> None:
    peak = max(v for k, v in peaks.items() if k.startswith("float32"))
    print("\nmatmul peaks (best of 5): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items())
          + f"; load average at the end {os.getloadavg()}\n")
    header = (f"{'layer':<12} {'engine':<14} {'ch':>3} {'s/ch':>7} {'ch/s':>7} {'median act':>11} {'GFLOP/s':>8} "
              f"{'% f32 peak':>10} {'% bf16 peak':>11}")
    print(header)
    print("-" * len(header))
    for layer, compared, engines in rows:
        for name, (seconds, count, acts, flops) in engines.items():
            gflops = flops * count / seconds / 1e9
            print(f"{layer:<12} {name:<14} {count:>3} {seconds / count:>7.3f} {count / seconds:>7.3f} "
                  f"{statistics.median(acts):>11.4g} {gflops:>8.1f} {100 * gflops / peak:>9.1f}% "
                  f"{100 * gflops / peaks['bfloat16']:>10.1f}%")
        ours = engines["atlasgen"]
        done = executed[layer] * ours[1] / ours[0] / 1e9
        print(f"{layer:<12} atlasgen executes {executed[layer] / ours[3]:.2f}x the 3x-forward count: {done:.1f} GFLOP/s, "
              f"{100 * done / peaks['bfloat16']:.1f}% of the bf16 peak")
        lucent_name = min((n for n in engines if n != "atlasgen"), key=lambda n: engines[n][0] / engines[n][1])
        fastest = engines[lucent_name]
        speedup = (ours[1] / ours[0]) / (fastest[1] / fastest[0])
        best = engines["lucent batch"]  # activations compared on every compared channel
        wins = int(np.sum(ours[2] >= best[2]))
        print(f"{layer:<12} speed-up vs {lucent_name} (lucent's faster mode): {speedup:.1f}x; median activation ratio "
              f"vs lucent batch {statistics.median(ours[2]) / statistics.median(best[2]):.2f}; "
              f"atlasgen >= lucent on {wins}/{len(compared)} channels")
        print(f"{'':<12} per channel {compared}:\n{'':<14}atlasgen {np.array2string(ours[2], precision=4)}\n"
              f"{'':<14}lucent   {np.array2string(best[2], precision=4)}")
        if "lucent single" in engines:
            print(f"{'':<14}lucent single (first {engines['lucent single'][1]}) {np.array2string(engines['lucent single'][2], precision=4)}")
    print()


if __name__ == "__main__":
    main()
