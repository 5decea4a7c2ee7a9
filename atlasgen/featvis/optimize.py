"""The octave loop: batched optimization of many images of one layer at once."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atlasgen.distributed import processes_per_gpu
from atlasgen.errors import AtlasError
from atlasgen import objectives
from atlasgen.featvis.device import autocast_for, repeatable
from atlasgen.featvis.batch import BatchObjective, ImageSpec, image_seed, image_specs, pack_batches
from atlasgen.featvis.field import blur_scale, field_side, pixel_scale
from atlasgen.featvis.fold import folded_batchnorm
from atlasgen.featvis.memory import retained_heap
from atlasgen.featvis.polyphase import polyphase_convolutions
from atlasgen.featvis.param import INIT_SD, ImageParam
from atlasgen.featvis.redirect import redirect_relu_gradients
from atlasgen.featvis.replay import LR, RATE, SIGMA, STRENGTH, StepInputs, StepReplay, octave_table
from atlasgen.featvis.transforms import DRAWS_PER_STEP, TransformRanges, affine_matrices, random_view
from atlasgen.hooks import eval_mode, forward_layers
from atlasgen.settings import Preprocess, VisSettings

log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 32  # images per batch on CPU (measured on 2 cores: 16-32 clearly beat 4-8 per image)
GPU_MEMORY_FRACTION = 0.6  # share of free GPU memory an automatic batch may use
MAX_AUTO_BATCH = 512
# Gradients are normalized to unit RMS per image before Adam, so this epsilon is relative: Fourier
# coefficients whose gradient is mere numerical noise (far below the image's RMS) are not blown
# up to full-size steps by Adam's per-coordinate normalization.
ADAM_EPS = 1e-2
# (step, the batch's images, the target layer's detached activations): watches the optimization
Recorder = Callable[[int, list[ImageSpec], torch.Tensor], None]


@dataclass
class VisResult:
    channels: list[int]
    images: dict[str, np.ndarray]  # objective -> uint8 (N, H, W, 3); a grouped objective's: (N, K, H, W, 3)
    activation: dict[str, np.ndarray]  # objective -> float32 (N,): its score of the final image(s), no transforms
    layer_response: np.ndarray  # float32 (N, C_layer): spatial means of the layer on the channel image


@dataclass(frozen=True)
class OctaveStep:
    """One octave as run: image side, number of steps, lr and blur ranges."""

    size: int
    steps: int
    lr: tuple[float, float]
    blur: tuple[float, float]


def octave_plan(settings: VisSettings) -> list[OctaveStep]:
    """Steps per octave (shares normalized, rounding remainder to the last), empty octaves dropped."""
    octaves = settings.octaves
    total_share = sum(o.share for o in octaves)
    counts = [int(round(settings.steps * o.share / total_share)) for o in octaves[:-1]]
    counts.append(max(settings.steps - sum(counts), 0))
    return [
        OctaveStep(max(8, int(round(o.scale * settings.size))), n, o.lr, o.blur)
        for o, n in zip(octaves, counts)
        if n > 0
    ]


def _normalizer(preprocess: Preprocess, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)

    def normalize(images: torch.Tensor) -> torch.Tensor:
        # channels_last lets cuDNN and oneDNN pick their fast convolution layouts (measured 1.9x
        # on CPU for GoogLeNet) without converting the caller's model.
        return ((images - mean) / std).contiguous(memory_format=torch.channels_last)

    return normalize


def layer_activations(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    return forward_layers(model, x, [layer])[layer]


@torch.no_grad()
def final_scores(
    model: nn.Module, layer: str, images: torch.Tensor, specs: list[ImageSpec], settings: VisSettings,
    preprocess: Preprocess, device: torch.device, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's objective score (N,) and the spatial mean of every channel (N, C), on [0, 1]
    images without transforms."""
    normalize = _normalizer(preprocess, device)
    scores, means = [], []
    for start in range(0, images.shape[0], batch_size):
        acts = layer_activations(model, layer, normalize(images[start : start + batch_size].to(device))).float()
        means.append(acts.mean(dim=(2, 3)).cpu())
        scores.append(BatchObjective.build(specs[start : start + batch_size], settings, device).scores(acts).cpu())
    return torch.cat(scores), torch.cat(means)


def _auto_batch_size(
    model: nn.Module, layer: str, settings: VisSettings, preprocess: Preprocess, device: torch.device
) -> int:
    """On CUDA, from free memory and the measured peak of a 2-image step; on CPU a fixed number."""
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    probe = 2
    free, _ = torch.cuda.mem_get_info(device)
    free //= processes_per_gpu()  # ranks sharing this GPU measure the same free memory at once
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    autocast, _ = autocast_for(device)
    x = torch.full((probe, 3, settings.size, settings.size), 0.5, device=device, requires_grad=True)
    with autocast:
        acts = layer_activations(model, layer, _normalizer(preprocess, device)(x))
    acts.float().mean().backward()
    per_image = max((torch.cuda.max_memory_allocated(device) - before) / probe, 1)
    del x, acts
    size = int(GPU_MEMORY_FRACTION * free / per_image)
    size = max(1, min(size, MAX_AUTO_BATCH))
    log.info("%s: batches of %d images on %s (%.1f MB per image, %.0f MB free)", layer, size, device,
             per_image / 2**20, free / 2**20)
    return size


def optimize_batch(
    model: nn.Module,
    layer: str,
    specs: list[ImageSpec],
    settings: VisSettings,
    preprocess: Preprocess,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    blur: float = 1.0,
    record: Recorder | None = None,
    still_last_octave: bool = False,
    rows: int | None = None,
) -> torch.Tensor:
    """Optimize one batch through every octave; returns float images (B, 3, size, size) on the CPU.
    `blur` scales every octave's blur (see `field.blur_scale`); `still_last_octave` drops the
    random views over the last octave and optimizes its RGB pixels there (see `field.pixel_scale`).
    `rows`: run the batch as that many images, the ones past `specs` without an objective (see
    `batch_rows`)."""
    plan = octave_plan(settings)
    total_steps = sum(o.steps for o in plan)
    generators = [torch.Generator().manual_seed(image_seed(settings.seed, s)) for s in specs]
    first = plan[0].size
    shape = ImageParam.shape_for(first, settings.fft)
    fill = max((rows or 0) - len(specs), 0)
    # Filler images start grey and stay so: no objective reads them, so their gradient is zero.
    init = torch.stack([torch.randn(shape, generator=g) * INIT_SD for g in generators] + [torch.zeros(shape)] * fill)
    draws = torch.stack([torch.rand(total_steps, DRAWS_PER_STEP, generator=g) for g in generators]
                        + [torch.zeros(total_steps, DRAWS_PER_STEP)] * fill).to(device)
    param = ImageParam(init.to(device).requires_grad_(True), first, settings.fft, settings.decorrelate)
    objective = BatchObjective.build(specs, settings, device)
    normalize = _normalizer(preprocess, device)
    autocast, scaler = autocast_for(device)
    ranges = TransformRanges(settings.pad, settings.jitter, tuple(settings.scale), settings.rotate)
    ends = [objectives.get(s.objective).lr_end for s in specs] + [1.0] * fill
    # Each image's learning-rate end, on the images' device once (no host transfer per step);
    # None when every image keeps the shared schedule.
    own_ends = torch.tensor(ends, device=device) if any(end != 1.0 for end in ends) else None
    inputs = StepInputs(len(init), DRAWS_PER_STEP, device)
    # A graph replays kernels only: a recorder (Python per step) and fp16's loss scaler (which
    # decides on the host whether to step) need the eager loop.
    capture = device.type == "cuda" and scaler is None and record is None

    def backward(param: ImageParam, theta: torch.Tensor, redirect: bool) -> torch.Tensor:
        """One forward and backward pass of the batch under the views `theta`; the activations."""
        view = random_view(param.image(), theta)
        with redirect_relu_gradients(redirect), autocast:
            acts = layer_activations(model, layer, normalize(view))
        loss = objective.loss(acts, theta)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return acts.detach()

    def one_step(param: ImageParam, optimizer: torch.optim.Optimizer, redirect: bool, ends: torch.Tensor | None,
                 blurs: bool) -> torch.Tensor:
        """A whole step, reading what changes between steps from `inputs` only (see replay.py);
        `ends`: each image's learning-rate end, where images step at their own rates."""
        # Over the last octave the transforms fade to the identity view, on which the image is
        # scored: robust structure is laid down first, then exact detail (borders, a neuron's
        # few pixels) settles without the random views averaging it away. A unit that sees a
        # few pixels gets no random views at all over the last octave (field.pixel_scale).
        acts = backward(param, affine_matrices(inputs.draws, ranges, inputs[STRENGTH]), redirect)
        before = param.params.detach().clone() if ends is not None else None
        if scaler is not None:
            scaler.unscale_(optimizer)
            _normalize_gradients(param.params)
            scaler.step(optimizer)
            scaler.update()
        else:
            _normalize_gradients(param.params)
            optimizer.step()
        if before is not None and ends is not None:
            _scale_steps(param.params, before, 1.0 + (ends - 1.0) * inputs[RATE])
        if blurs:
            param.blur(inputs[SIGMA])
        return acts

    step = 0
    for octave in plan:
        last = octave is plan[-1]
        pixels = still_last_octave and last
        if octave.size != param.size or pixels:
            param = _resized(param, octave.size, pixels)
        table = octave_table(octave.lr, octave.blur, octave.steps, last, still_last_octave, blur, device)
        # A tensor learning rate, which the step reads from `inputs` like everything else.
        optimizer = torch.optim.Adam([param.params], lr=inputs[LR], eps=ADAM_EPS, capturable=device.type == "cuda")
        # Redirected ReLU gradients over the first steps of every octave, not only the first:
        # a unit alive on the smaller image can be dead on the resized one, and without a
        # gradient it stays dead. They differ from the plain gradients only where an image's
        # ReLU passes none, image by image.
        runs = {redirect: StepReplay(functools.partial(one_step, param, optimizer, redirect, own_ends if last else None,
                                                       blur > 0 and max(octave.blur) > 0), [optimizer], capture)
                for redirect in (True, False)}
        for k in range(octave.steps):
            redirect = k < settings.relu_redirect_steps
            if not redirect:
                runs[True].release()
            inputs.load(draws[:, step], table[k])
            acts = runs[redirect]()
            if record is not None:
                record(step, specs, acts)
            step += 1
            if progress is not None:
                progress(len(specs))
        for run in runs.values():
            run.release()
    with torch.no_grad():
        final = param.image()[: len(specs)]
        if final.shape[-1] != settings.size:
            final = F.interpolate(final, size=(settings.size, settings.size), mode="bilinear", align_corners=False)
    return final.float().cpu()


def batch_rows(device: torch.device, batch_size: int) -> int | None:
    """How many images a batch of at most `batch_size` runs as: on CUDA always `batch_size`,
    the rest filler, because cuDNN picks its algorithms (and so its rounding, which the
    optimization amplifies into visible detail) by tensor shape, batch size included: an image
    is then the same alone as in a full batch. On CPU as many as there are (None): oneDNN's
    sums do not depend on the batch."""
    return batch_size if device.type == "cuda" else None


def _optimize_fitting(run: Callable[..., torch.Tensor], layer: str, specs: list[ImageSpec],
                      smallest: int, rows: int | None) -> list[torch.Tensor]:
    """`run(specs, rows=rows)` (optimize_batch), split in halves while the GPU runs out of memory
    (other processes can take memory after the batch size was chosen); images of a split batch
    round differently on a GPU (`batch_rows`). Progress already reported for a failed batch is
    not taken back."""
    try:
        return [run(specs, rows=rows)]
    except torch.cuda.OutOfMemoryError:
        half = max(len(specs) // 2, smallest)
        if half >= len(specs):
            raise AtlasError(f"{layer}: {len(specs)} image(s) do not fit in the GPU's free memory; set "
                             "visualize.size smaller, or build on another device with --device") from None
        torch.cuda.empty_cache()
        log.warning("%s: out of GPU memory with %d images in a batch; trying %d", layer, len(specs), half)
        rows = half if rows is not None else None
        return [image for part in pack_batches(specs, half) for image in _optimize_fitting(run, layer, part, smallest, rows)]


def _scale_steps(params: torch.Tensor, before: torch.Tensor, rates: torch.Tensor) -> None:
    """Scale each image's optimizer step by its rate. Adam's step is linear in the learning
    rate and its moments do not depend on it, so this is Adam at each image's own rate; lerp
    returns the new value exactly where the rate is 1, so those images are as without it."""
    with torch.no_grad():
        params.copy_(torch.lerp(before, params, rates.view((-1,) + (1,) * (params.dim() - 1))))


def _normalize_gradients(params: torch.Tensor) -> None:
    """Scale each image's gradient to unit RMS (per image, so batch-independent)."""
    grad = params.grad
    if grad is None:
        return
    rms = grad.flatten(1).pow(2).mean(dim=1).sqrt()
    # Keep an all-zero gradient (dead image, or an fp16 overflow the scaler will skip) as it is.
    grad.div_(torch.where(rms > 0, rms, torch.ones_like(rms)).view((-1,) + (1,) * (grad.dim() - 1)))


def _resized(param: ImageParam, size: int, pixels: bool = False) -> ImageParam:
    """Upsample the current image and re-express it as parameters of the new size; `pixels`:
    as its RGB pixels (no spectrum, no colour decorrelation)."""
    with torch.no_grad():
        image = param.image()
        if size != param.size:
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    fft, decorrelate = (False, False) if pixels else (param.fft, param.decorrelate)
    shape = (image.shape[0],) + ImageParam.shape_for(size, fft)
    new = ImageParam(torch.zeros(shape, device=image.device), size, fft, decorrelate)
    new.set_image(image)
    new.params.requires_grad_(True)
    return new


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [0, 1] -> uint8 (B, H, W, 3)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _validate(model: nn.Module, layer: str, settings: VisSettings, device: torch.device) -> None:
    unknown = [o for o in settings.objectives if o not in objectives.names()]
    if unknown or not settings.objectives:
        raise AtlasError(f"unknown objective(s) {unknown}: choose from {', '.join(objectives.names())}")
    if layer not in dict(model.named_modules()):
        raise AtlasError(f"model has no layer {layer!r}: use a dotted module name (see `atlasgen layers`)")
    if not settings.octaves or settings.steps < 1:
        raise AtlasError("visualize: need at least one octave and one step")
    wrong = {p.device for p in model.parameters()} - {device}
    if any(d.type != device.type or (device.index is not None and d.index != device.index) for d in wrong):
        raise AtlasError(f"model is on {sorted(map(str, wrong))} but visualization was asked to run on {device}")


def visualize_channels(
    model: nn.Module,
    layer: str,
    channels: Sequence[int],
    settings: VisSettings,
    preprocess: Preprocess,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    record: Recorder | None = None,
) -> VisResult:
    """Feature visualizations of `channels` of `layer` for every objective in `settings.objectives`.

    `progress(n)` is called after every batched optimization step with the number of images
    in the batch, so the total is `settings.steps` times the number of images. `record(step,
    specs, acts)` is called with the target layer's activations of every step (featvis/record.py).
    """
    _validate(model, layer, settings, device)
    channels = [int(c) for c in channels]
    specs = image_specs(channels, settings)
    noise = torch.rand(1, 3, settings.size, settings.size, generator=torch.Generator().manual_seed(0))
    probe = _normalizer(preprocess, device)(noise.to(device))
    with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, layer, probe) as probed, \
            polyphase_convolutions(model, device), retained_heap(device.type == "cpu"):
        n_layer = probed.shape[1]
        bad = [c for c in channels if not 0 <= c < n_layer]
        if bad:
            raise AtlasError(f"layer {layer!r} has {n_layer} channels; channel(s) {bad} do not exist")
        batch_size = settings.batch_size or _auto_batch_size(model, layer, settings, preprocess, device)
        largest_set = max(objectives.get(o).images(settings) if objectives.get(o).grouped else 1 for o in settings.objectives)
        batch_size = max(batch_size, largest_set)
        batches = pack_batches(specs, batch_size)
        log.debug("visualizing %d channel(s) of %s: %d images in %d batch(es)", len(channels), layer, len(specs), len(batches))
        side = field_side(model, layer, probe)
        blur, still = blur_scale(side), pixel_scale(side)
        log.debug("%s: field %d px, blur x%.2f%s", layer, side, blur, ", last octave without random views" if still else "")
        run = functools.partial(optimize_batch, model, layer, settings=settings, preprocess=preprocess, device=device,
                                progress=progress, blur=blur, record=record, still_last_octave=still)
        rows = batch_rows(device, batch_size)
        finals = [image for batch in batches for image in _optimize_fitting(run, layer, batch, largest_set, rows)]
        pixels = to_uint8(torch.cat(finals))
        # Score the stored (quantized) images, exactly what the site shows.
        scores, means = final_scores(model, layer, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, specs,
                                     settings, preprocess, device)
    return _assemble(channels, specs, pixels, scores, means, settings)


def _assemble(
    channels: list[int], specs: list[ImageSpec], pixels: np.ndarray, scores: torch.Tensor, means: torch.Tensor, settings: VisSettings
) -> VisResult:
    row = {spec: i for i, spec in enumerate(specs)}
    images: dict[str, np.ndarray] = {}
    activation: dict[str, np.ndarray] = {}
    for name in settings.objectives:
        objective = objectives.get(name)
        idx = np.array([[row[ImageSpec(c, name, k)] for k in range(objective.images(settings))] for c in channels])
        images[name] = pixels[idx] if objective.grouped else pixels[idx[:, 0]]
        activation[name] = scores[torch.from_numpy(idx)].mean(dim=1).numpy().astype(np.float32)
    first = "channel" if "channel" in settings.objectives else settings.objectives[0]
    response_rows = [row[ImageSpec(c, first, 0)] for c in channels]
    return VisResult(channels, images, activation, means[response_rows].numpy().astype(np.float32))
