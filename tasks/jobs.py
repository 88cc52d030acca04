"""The user jobs behind ``tessera``'s own subcommands (everything that is not fit/validate/test/predict).

A job is a function registered where it is defined, with its arguments and a real example:

    @job("eval", "code", help="fine-tune and test every model on the CuBERT tasks",
         example="tessera eval code --benchmark cache:code/benchmark-stdlib --encoder runs/code/mlm/encoder")
    def eval_code(args: argparse.Namespace) -> int: ...

    @eval_code.arguments
    def _(p: argparse.ArgumentParser) -> None:
        p.add_argument("--benchmark", required=True, help="...")

Groups: "prepare" (``tessera prepare <name>``), "eval" (``tessera eval <name>``) and None for the
top-level commands (``tessera embed``, ``tessera export``, ``tessera import``). A job signals a
user's mistake (a missing path, an empty folder, a corrupt weight file) with ``UserError`` or
``FileNotFoundError`` / ``ValueError`` carrying a message that names the input and what to do;
the CLI prints that one line and exits with status 2 (``TESSERA_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field

GROUPS = {
    "prepare": "build a data set, corpus, tokenizer, benchmark or rendered set into the cache",
    "eval": "evaluate encoders on a benchmark; writes JSON (and a plot) under --out",
}
# the modules that define jobs; imported when the CLI needs the registry (importing every one is
# what `tessera --help` costs, so these stay light at import time: heavy imports inside the jobs)
JOB_MODULES = (
    "tasks.embed",
    "tasks.export",
    "tasks.importer",
    *(f"tasks.{group}.{modality}" for group in GROUPS for modality in ("audio", "code", "cxr", "recsys", "text")),
)


class UserError(Exception):
    """A mistake in what the user gave (path, option, file content): printed as one line, exit 2."""


@dataclass
class Job:
    group: str | None  # "prepare", "eval" or None (a top-level command)
    name: str
    help: str  # one line, shown in the listing
    example: str  # a command that runs as written (shown in --help)
    run: Callable[[argparse.Namespace], int | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] = field(default=lambda p: None)
    description: str | None = None  # longer text for --help (default: the function's docstring)

    def arguments(self, fn: Callable[[argparse.ArgumentParser], None]) -> Callable:
        """Decorator: the function that adds this job's arguments to its parser."""
        self.add_arguments = fn
        return fn

    @property
    def command(self) -> str:
        return f"tessera {self.group} {self.name}" if self.group else f"tessera {self.name}"

    def __call__(self, args: argparse.Namespace) -> int | None:
        return self.run(args)


JOBS: dict[tuple[str | None, str], Job] = {}


def job(group: str | None, name: str, *, help: str, example: str) -> Callable[[Callable], Job]:
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown job group {group!r}; one of {sorted(GROUPS)}")

    def deco(fn: Callable[[argparse.Namespace], int | None]) -> Job:
        key = (group, name)
        if key in JOBS:
            raise ValueError(f"job {' '.join(k for k in key if k)!r} is registered twice")
        JOBS[key] = j = Job(group, name, help, example, fn, description=fn.__doc__)
        return j

    return deco


def load_jobs() -> dict[tuple[str | None, str], Job]:
    import importlib

    for module in JOB_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a modality with no jobs of that group
            if e.name != module:
                raise
    return JOBS


def jobs_in(group: str | None) -> list[Job]:
    return sorted((j for (g, _), j in load_jobs().items() if g == group), key=lambda j: j.name)
