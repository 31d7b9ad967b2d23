"""torch.compile for a family's heavy parts (its compile_parts): a compiled part that falls back to
its eager self when the compiler fails."""

from __future__ import annotations

from collections.abc import Callable

import torch


class CompiledOrEager:
    """A compiled function that falls back to its eager self for good when the compiler
    fails (TorchDynamo's own errors); errors of the computation itself pass through."""

    def __init__(self, name: str, compiled: Callable, eager: Callable,
                 on_failure: Callable[[str, BaseException], None] | None) -> None:
        self.name, self.compiled, self.eager, self.on_failure = name, compiled, eager, on_failure

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as e:  # imported by torch.compile
                self.compiled = None
                if self.on_failure is not None:
                    self.on_failure(self.name, getattr(e, "inner_exception", None) or e)
        return self.eager(*args, **kwargs)


def compile_each(parts, backend, on_failure) -> None:
    """torch.compile each (name, owner, attribute, torch.compile keywords) of `parts`: the
    compiled function is set on the owner as an instance attribute, called in place of the
    method, and falls back to it (after on_failure(name, error)) when the compiler fails."""
    for name, owner, attr, kw in parts:
        eager = getattr(owner, attr)
        setattr(owner, attr, CompiledOrEager(name, torch.compile(eager, backend=backend, **kw), eager, on_failure))


def is_compiled(module: torch.nn.Module) -> bool:
    """Whether compile_parts has replaced this module's forward."""
    return isinstance(module.__dict__.get("forward"), CompiledOrEager)
