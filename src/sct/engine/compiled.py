"""``train.compile``: a model run through ``torch.compile`` that falls back to eager execution where compiling fails."""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn


class CompiledWithFallback(nn.Module):
    """``model`` compiled with ``torch.compile``; the first call that fails switches to ``model`` itself for good.

    Compiling happens lazily, in the first calls, and can fail in many ways (an operation the compiler does
    not handle, no C++ toolchain, an old GPU), each with its own exception type; whatever the cause, the
    run warns once, names the error, and goes on eagerly. Errors of the eager model itself propagate.
    ``error`` holds the compile failure, or None while compiling works. Same input and output as ``model``.
    """

    def __init__(self, model: nn.Module, backend: str = "inductor"):
        super().__init__()
        self.eager = model
        self.compiled = torch.compile(model, backend=backend)
        self.error: str | None = None

    def forward(self, *args, **kwargs):
        if self.error is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compile failure means: run eagerly
                # Compiler messages run over many lines; one line, cut short, names the cause.
                self.error = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
                warnings.warn(f"train.compile: torch.compile failed ({self.error}); running the model eagerly",
                              RuntimeWarning, stacklevel=2)
        return self.eager(*args, **kwargs)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """The wrapped DistributedDataParallel's ``no_sync`` (gradient accumulation), a no-op otherwise."""
        no_sync = getattr(self.eager, "no_sync", None)
        return no_sync() if no_sync is not None else contextlib.nullcontext()
