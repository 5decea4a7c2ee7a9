"""One optimization step as a fixed sequence of kernels, replayed as a CUDA graph.

Whatever changes from step to step (the views' random draws, the learning rate, the views'
strength, the blur) is read from small tensors that `StepInputs.load` updates in place, so every
step of an octave launches the same kernels on the same memory. On CUDA the step is captured
once as a graph and then replayed with one call instead of launching its few hundred kernels one
by one from Python (H100, GoogLeNet, 511 images of every objective: 1.14-1.23x at 64 px, where
the launches set the pace; nothing at 128 px, where the GPU does; the images bit-identical). On
CPU, and wherever capture fails, the same step runs eagerly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger(__name__)

# Columns of an octave's per-step table.
LR, STRENGTH, SIGMA, RATE = range(4)


def octave_table(lr: tuple[float, float], blur: tuple[float, float], steps: int, last: bool, still: bool,
                 blur_scale: float, device: torch.device) -> torch.Tensor:
    """(steps, 4) float32 on `device`: each step's learning rate, view strength, blur sigma and
    the per-image rate factor (see `optimize._scale_steps`).

    Over the last octave the views fade to the identity (or are off, `still`), the octaves
    before keep full strength; lr and blur go linearly from their start to their end."""
    rows = []
    for k in range(steps):
        t = k / (steps - 1) if steps > 1 else 0.0
        shared = lr[0] + (lr[1] - lr[0]) * t
        strength = (0.0 if still else 1.0 - t) if last else 1.0
        rate = lr[1] * t / shared if shared > 0 else 0.0
        rows.append((shared, strength, blur_scale * (blur[0] + (blur[1] - blur[0]) * t), rate))
    return torch.tensor(rows, dtype=torch.float32).to(device)


class StepInputs:
    """The tensors a step reads: its random draws (B, 4) and its row of the octave's table."""

    def __init__(self, batch: int, draws_per_step: int, device: torch.device):
        self.draws = torch.zeros(batch, draws_per_step, device=device)
        self.row = torch.zeros(4, device=device)

    def load(self, draws: torch.Tensor, row: torch.Tensor) -> None:
        self.draws.copy_(draws)
        self.row.copy_(row)

    def __getitem__(self, column: int) -> torch.Tensor:
        return self.row[column]


class StepReplay:
    """Calls `step()` (which reads only tensors updated in place) eagerly, or on CUDA: eagerly
    once (optimizer state, cuDNN and cuFFT plans), then captured and replayed as a CUDA graph.
    `optimizers`' gradients are cleared before every eager call and before the capture, so the
    graph writes them afresh at every replay. `capture=False`: always eager."""

    def __init__(self, step: Callable[[], torch.Tensor], optimizers: Sequence[torch.optim.Optimizer], capture: bool):
        self.step = step
        self.optimizers = optimizers
        self.capture = capture
        self.warm = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:
            self.graph.replay()
            assert self.output is not None
            return self.output
        if self.capture and self.warm:
            captured = self._captured()
            if captured is not None:
                return captured
        self._zero_grad()
        self.warm = True
        if not self.capture:
            return self.step()
        # Eager warm-up on a side stream, as CUDA graph capture asks (torch.cuda.graph's notes).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            output = self.step()
        torch.cuda.current_stream().wait_stream(side)
        return output

    def release(self) -> None:
        """Drop the graph and its memory (the caller will not replay it again)."""
        self.graph, self.output = None, None

    def _captured(self) -> torch.Tensor | None:
        """Capture the step and replay it once (capture itself runs nothing); None if the step
        cannot be captured (a model that waits for the GPU in its forward pass, say)."""
        self._zero_grad()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                output = self.step()
        except RuntimeError as error:
            log.debug("the step could not be captured as a CUDA graph, so it runs eagerly: %s", error)
            self.capture = False
            torch.cuda.synchronize()
            return None
        self.graph, self.output = graph, output
        graph.replay()
        return output

    def _zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
