"""Run a frontend natively against an in-memory gateway: no Wasm, daemon or registry.

The WIT bindings must be importable: `componentize-py -d BUILDWIT/wit -w frontend bindings
DIR` writes them (pure Python), and DIR goes on `sys.path`. Then::

    gw = MemoryGateway().file("dockerfile", "Stepfile", "FROM busybox\\n").image(
        "docker.io/library/busybox:latest", DIGEST, CONFIG_JSON)
    out = run(Steps, gw)
    out.definition.ops          # the LLB of the result (WIT records)
    out.metadata["containerimage.config"]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from componentize_py_types import Err
from wit_world.imports import gateway, llb as wit

from . import BuildResult, Client, Frontend, Platform
from . import run as run_frontend

__all__ = ["MemoryGateway", "Output", "run"]


class _Files(gateway.Reference):
    """A solved local source: the files given for it."""

    def __init__(self, files: dict):
        self.files = files

    def read_file(self, path, range):
        data = self.files.get(path.lstrip("/"))
        if data is None:
            raise Err(gateway.Error(gateway.ErrorKind.NOT_FOUND, f"{path}: no such file", None))
        if range is not None:
            data = data[range.offset : range.offset + range.length]
        return data


class _Solved(gateway.Reference):
    """Any other solved definition: nothing can be read from it here."""

    def __init__(self, definition):
        self.definition = definition

    def read_file(self, path, range):
        raise Err(gateway.Error(gateway.ErrorKind.UNSUPPORTED,
                                "MemoryGateway reads only the files given for a local", None))


@dataclass
class MemoryGateway:
    """Options, local files and image configs a test gives a frontend."""

    options: dict = field(default_factory=dict)
    locals: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    platforms: list = field(default_factory=lambda: [Platform.linux_amd64()])

    def option(self, key: str, value: str) -> "MemoryGateway":
        self.options[key] = value
        return self

    def file(self, local: str, path: str, data: bytes | str) -> "MemoryGateway":
        """A file of the local `local` (`dockerfile`, `context`)."""
        self.locals.setdefault(local, {})[path.lstrip("/")] = data.encode() if isinstance(data, str) else data
        return self

    def image(self, reference: str, digest: str, config: bytes | str) -> "MemoryGateway":
        """What `resolve_image_config` answers for the normalised `reference`."""
        self.images[reference] = (digest, config.encode() if isinstance(config, str) else config)
        return self


@dataclass
class Output:
    """What a run returned: the definition of its result (the last one solved into it),
    its metadata, and every definition the frontend solved."""

    definition: wit.Definition | None
    metadata: dict
    solved: list


def run(frontend: type[Frontend], gw: MemoryGateway) -> Output:
    """Run `frontend`'s build against `gw`; raises the BuildError it fails with."""
    solved: list = []

    def solve(request):
        definition = request.definition
        solved.append(definition)
        if definition is None or definition.result is None:
            return gateway.SolveResult(None, [], [])
        op = definition.ops[definition.result.op]
        if isinstance(op.kind, wit.OpKind_Source) and op.kind.value.identifier.startswith("local://"):
            name = op.kind.value.identifier[len("local://"):]
            return gateway.SolveResult(_Files(gw.locals.get(name, {})), [], [])
        return gateway.SolveResult(_Solved(definition), [], [])

    def resolve_image_config(request):
        found = gw.images.get(request.ref)
        if found is None:
            raise Err(gateway.Error(gateway.ErrorKind.NOT_FOUND, f"{request.ref}: not found", None))
        return gateway.ResolvedImage(request.ref, found[0], found[1])

    fakes = {
        "options": lambda: list(gw.options.items()),
        "inputs": lambda: [],
        "worker_platforms": lambda: list(gw.platforms),
        "solve": solve,
        "resolve_image_config": resolve_image_config,
        "warn": lambda warning: None,
        "log": lambda level, message: None,
        "progress": lambda *args: None,
    }
    saved = {name: getattr(gateway, name) for name in fakes}
    for name, fake in fakes.items():
        setattr(gateway, name, fake)
    try:
        result: BuildResult = run_frontend(frontend(), Client())
    finally:
        for name, original in saved.items():
            setattr(gateway, name, original)
    definition = None
    if isinstance(result.ref, _Solved):
        definition = result.ref.definition
    return Output(definition, result.metadata, solved)

