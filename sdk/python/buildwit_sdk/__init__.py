"""The buildwit frontend SDK for Python: the same contract (WIT `buildwit:frontend@0.1.0`)
as the Rust SDK, made into a component by `componentize-py`.

A frontend subclasses `Frontend` and exports it::

    from buildwit_sdk import BuildResult, Client, Frontend, export, llb

    class Hello(Frontend):
        name, version = "hello", "0.1.0"

        def build(self, client: Client) -> BuildResult:
            who = client.option("name") or "world"
            state = llb.scratch().file(llb.mkfile("/hello", 0o644, f"hello {who}\\n"))
            return BuildResult(client.solve(state))

    Builder = export(Hello)

and is built with::

    componentize-py -d BUILDWIT/wit -w frontend componentize app -p . -p BUILDWIT/sdk/python -o hello.wasm

Errors are `BuildError`s (`BuildError.invalid("...").at("Stepfile", 3)`); any other
exception fails the build with its traceback in the message.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import builder
from wit_world.imports import gateway, llb as wit_llb

from . import llb
from .image import ImageConfig, ImageRef
from .llb import Platform

__all__ = [
    "ALL", "BuildError", "BuildResult", "Client", "DESCRIBE", "Frontend", "ImageConfig", "ImageRef",
    "Platform", "Reference", "Subrequest", "WIT_VERSION", "export", "llb",
]

#: The version of the WIT package this SDK implements.
WIT_VERSION = "0.1.0"

#: The subrequest every frontend answers: the list of those it answers.
DESCRIBE = "frontend.subrequests.describe"

#: `Frontend.subrequests = ALL`: every subrequest goes to `build` (a frontend that forwards).
ALL = "all"

Reference = gateway.Reference
ResolveMode = gateway.ResolveMode
LogLevel = gateway.LogLevel


class BuildError(Exception):
    """A build error of a kind the host and the user understand, optionally at a place in a
    source file (1-based lines)."""

    def __init__(self, kind: gateway.ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.location: gateway.SourceLocation | None = None

    @staticmethod
    def invalid(message: str) -> "BuildError":
        """A bad request or definition, such as a syntax error."""
        return BuildError(gateway.ErrorKind.INVALID_ARGUMENT, message)

    @staticmethod
    def not_found(message: str) -> "BuildError":
        return BuildError(gateway.ErrorKind.NOT_FOUND, message)

    @staticmethod
    def unsupported(message: str) -> "BuildError":
        return BuildError(gateway.ErrorKind.UNSUPPORTED, message)

    @staticmethod
    def internal(message: str) -> "BuildError":
        return BuildError(gateway.ErrorKind.INTERNAL, message)

    def at(self, filename: str, start_line: int, end_line: int | None = None) -> "BuildError":
        """Point the error at lines of a file (inclusive)."""
        end = start_line if end_line is None else end_line
        span = wit_llb.Range(wit_llb.Position(start_line, 0), wit_llb.Position(end, 0))
        self.location = gateway.SourceLocation(filename, [span])
        return self

    def to_wit(self) -> gateway.Error:
        return gateway.Error(self.kind, self.message, self.location)


def _gateway_error(err: Err) -> BuildError:
    """A gateway call's error (raised as `Err(gateway.Error)`) as a BuildError."""
    value = err.value
    error = BuildError(value.kind, value.message)
    error.location = value.location
    return error


@dataclass
class BuildResult:
    """What a build returns: one reference (or one per platform) and metadata."""

    ref: Reference | None = None
    refs: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def with_metadata(self, key: str, value: bytes | str) -> "BuildResult":
        self.metadata[key] = value.encode() if isinstance(value, str) else bytes(value)
        return self

    def with_image_config(self, config: ImageConfig) -> "BuildResult":
        """Return `config` as the image's config (`containerimage.config`)."""
        return self.with_metadata("containerimage.config", config.to_json())


class Client:
    """The gateway, as a frontend sees it."""

    def options(self) -> dict[str, str]:
        """The frontend options: `filename` (the build file, when the client gave one; under
        `# syntax=` as BuildKit sets it), `target`, `build-arg:NAME`, `platform`,
        `context:NAME`, `requestid` (a subrequest such as `frontend.outline`), and under
        `# syntax=` `source` (this frontend's image) and `cmdline`. Of a key given twice,
        the first."""
        options: dict[str, str] = {}
        for key, value in gateway.options():
            options.setdefault(key, value)
        return options

    def option(self, key: str) -> str | None:
        return self.options().get(key)

    def build_args(self) -> dict[str, str]:
        """`build-arg:NAME` options as NAME -> value."""
        prefix = "build-arg:"
        return {k[len(prefix):]: v for k, v in self.options().items() if k.startswith(prefix)}

    def inputs(self) -> dict:
        """Named inputs the caller gave (BuildKit's frontend inputs), as WIT definitions."""
        return dict(gateway.inputs())

    def worker_platforms(self) -> list:
        """The platforms the worker builds for, its own first."""
        return gateway.worker_platforms()

    def default_platform(self):
        """The platform a build that names none is for: the worker's own."""
        platforms = self.worker_platforms()
        return platforms[0] if platforms else Platform.linux_amd64()

    def solve(self, state: "llb.State") -> Reference | None:
        """Solve a state's definition; None for an empty (scratch) result."""
        return self.solve_request(gateway.SolveRequest(state.marshal(), None, [], [], False)).ref

    def solve_request(self, request: gateway.SolveRequest) -> gateway.SolveResult:
        """Solve a definition, or forward to another frontend."""
        try:
            return gateway.solve(request)
        except Err as e:
            raise _gateway_error(e) from None

    def read_file(self, ref: Reference, path: str) -> bytes:
        """A file of a solved result (building it if need be)."""
        try:
            return ref.read_file(path, None)
        except Err as e:
            raise _gateway_error(e) from None

    def resolve_image_config(self, reference: str, platform=None, log_name: str = "",
                             mode: gateway.ResolveMode = gateway.ResolveMode.DEFAULT) -> gateway.ResolvedImage:
        """An image's digest and config, through the host's registry settings and policy."""
        request = gateway.ResolveImageRequest(reference, platform, mode, log_name)
        try:
            return gateway.resolve_image_config(request)
        except Err as e:
            raise _gateway_error(e) from None

    def warn(self, short: str, detail: list[str] | None = None, url: str = "") -> None:
        """A warning the user sees with the build's output."""
        gateway.warn(gateway.Warning(1, short, detail or [], url, None, []))

    def log(self, message: str, level: gateway.LogLevel = gateway.LogLevel.INFO) -> None:
        gateway.log(level, message)


@dataclass
class Subrequest:
    """A subrequest (`--call NAME`, option `requestid`) a frontend answers in `build`."""

    name: str
    version: str = "1.0.0"
    description: str = ""


class Frontend:
    """Subclass it: set `name`, `version`, `channel`, write `build`, list `subrequests`."""

    name = "frontend"
    version = "0.1.0"
    channel = "stable"
    #: The subrequests `build` answers (its option `requestid`). Others are refused with
    #: BuildKit's "unsupported request NAME", and `frontend.subrequests.describe` lists these.
    #: `ALL` hands every request to `build`.
    subrequests: list[Subrequest] | str = []

    def build(self, client: Client) -> BuildResult:
        raise NotImplementedError


def run(frontend: Frontend, client: Client) -> BuildResult:
    """Answer a build or a subrequest, as the Rust SDK's `run` does."""
    request = client.option("requestid")
    if not request or frontend.subrequests == ALL:
        return frontend.build(client)
    if any(s.name == request for s in frontend.subrequests):
        return frontend.build(client)
    if request != DESCRIBE:
        raise BuildError.unsupported(f"unsupported request {request}")
    listed = list(frontend.subrequests) + [
        Subrequest(DESCRIBE, "1.0.0", "List available subrequest types")]
    described = [{
        "name": s.name, "version": s.version, "type": "rpc", "description": s.description,
        "metadata": [{"name": "result.json"}, {"name": "result.txt"}],
    } for s in listed]
    text = "NAME\tVERSION\tDESCRIPTION\n" + "".join(
        f"{s.name.removeprefix('frontend.')}\t{s.version}\t{s.description}\n" for s in listed)
    return (BuildResult()
            .with_metadata("result.json", json.dumps(described, indent=2))
            .with_metadata("result.txt", text)
            .with_metadata("version", "1.0.0"))


def export(frontend: type[Frontend]) -> type:
    """The class componentize-py exports as `builder` (assign it to `Builder` in the
    module given to `componentize`)."""

    class Builder(exports.Builder):
        def info(self) -> builder.FrontendInfo:
            return builder.FrontendInfo(frontend.name, frontend.version, frontend.channel)

        def build(self) -> builder.BuildResult:
            try:
                result = run(frontend(), Client())
            except BuildError as e:
                raise Err(e.to_wit()) from None
            except Exception as e:
                # Any other exception: the build fails with its traceback, not a trap.
                message = "".join(traceback.format_exception(e)).rstrip()
                raise Err(gateway.Error(gateway.ErrorKind.INTERNAL,
                                        f"frontend raised {type(e).__name__}: {e}\n{message}", None)) from None
            return builder.BuildResult(result.ref, list(result.refs.items()), list(result.metadata.items()))

    return Builder
