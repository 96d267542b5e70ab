"""An LLB builder in the spirit of BuildKit's Go `llb` package, as the Rust SDK's `llb`.

A `State` is an immutable value: a filesystem (the output of some op, or scratch) plus the
process settings later execs inherit (env, working directory, user, platform, network).
Ops are made with `Source`, `State.run`, `State.file`; `State.marshal` flattens the graph
into a WIT `Definition` in BuildKit's order (depth-first, post-order, equal ops once), so
the host encodes it with the digests BuildKit's Go client would produce. The same steps
written with the Rust SDK give the same definition.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field, replace

from wit_world.imports import llb as wit

__all__ = [
    "CacheSharing", "Exec", "ExecState", "Metadata", "NetMode", "Platform", "Source", "State",
    "clean_path", "copy", "mkdir", "mkfile", "rm", "scratch", "symlink",
]

NetMode = wit.NetMode
CacheSharing = wit.CacheSharing


class Platform:
    """Parsing and naming of WIT platforms (`linux/amd64`, `linux/arm/v7`)."""

    @staticmethod
    def parse(text: str) -> wit.Platform:
        parts = text.strip().split("/")
        if not 2 <= len(parts) <= 3 or any(not p for p in parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        os_ = parts[0].lower()
        arch, variant = {
            "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "aarch64": ("arm64", ""),
            "i386": ("386", ""), "armhf": ("arm", "v7"), "armel": ("arm", "v6"),
        }.get(parts[1].lower(), (parts[1].lower(), ""))
        if len(parts) == 3:
            variant = parts[2].lower()
        if arch == "arm64" and variant == "v8":
            variant = ""
        if arch == "arm" and not variant:
            variant = "v7"
        return wit.Platform(arch, os_, variant, "", [])

    @staticmethod
    def id(platform: wit.Platform) -> str:
        parts = [platform.os, platform.architecture] + ([platform.variant] if platform.variant else [])
        return "/".join(parts)

    @staticmethod
    def linux_amd64() -> wit.Platform:
        return Platform.parse("linux/amd64")


def clean_path(p: str) -> str:
    """Go's `path.Clean` of `p` taken from `/`: always absolute, no `.`, `..` or `//`."""
    return "/" + posixpath.normpath("/" + p).lstrip("/")


def _resolve_keep_slash(cwd: str, p: str) -> str:
    joined = clean_path(p if p.startswith("/") else f"{cwd}/{p}")
    if (p.endswith("/") or p.endswith("/.") or p == ".") and joined != "/":
        return joined + "/"
    return joined


@dataclass(frozen=True)
class Metadata:
    """Metadata of an op: its progress name, caching, capabilities. Not part of its digest."""

    description: tuple = ()
    ignore_cache: bool = False
    caps: tuple = ()

    def custom_name(self, name: str) -> "Metadata":
        """The name progress output shows for the step (`llb.customname`)."""
        return self.with_description("llb.customname", name)

    def with_description(self, key: str, value: str) -> "Metadata":
        described = dict(self.description)
        described[key] = value
        return replace(self, description=tuple(sorted(described.items())))

    def with_ignore_cache(self, ignore: bool = True) -> "Metadata":
        return replace(self, ignore_cache=ignore)

    def cap(self, *caps: str) -> "Metadata":
        return replace(self, caps=tuple(sorted(set(self.caps) | set(caps))))

    def to_wit(self) -> wit.OpMetadata:
        return wit.OpMetadata(
            self.ignore_cache, list(self.description), None,
            [(c, True) for c in self.caps], None, None,
        )


@dataclass(eq=False)
class _Vertex:
    kind: object
    inputs: list  # of (_Vertex, output index)
    platform: wit.Platform | None
    metadata: Metadata
    # The order the marshaller walks `inputs` in, when not theirs (BuildKit's FileOp).
    visit_order: list | None = None


@dataclass(frozen=True)
class State:
    """A filesystem (`output`: a vertex and its output index, or None for scratch) and the
    process settings later execs inherit."""

    output: tuple | None = None
    env: tuple = ()
    cwd: str | None = None
    user: str | None = None
    platform: wit.Platform | None = None
    network: wit.NetMode | None = None

    def is_scratch(self) -> bool:
        return self.output is None

    def with_env(self, key: str, value: str) -> "State":
        """Set a variable; setting it again moves it to the end, as BuildKit's list does."""
        return replace(self, env=tuple((k, v) for k, v in self.env if k != key) + ((key, value),))

    def get_env(self, key: str) -> str | None:
        return next((v for k, v in self.env if k == key), None)

    def dir(self, path: str) -> "State":
        """Set the working directory; a relative path is joined to the current one."""
        return replace(self, cwd=clean_path(path if path.startswith("/") else f"{self.get_dir()}/{path}"))

    def get_dir(self) -> str:
        return self.cwd or "/"

    def with_user(self, user: str) -> "State":
        return replace(self, user=user)

    def with_platform(self, platform: wit.Platform) -> "State":
        return replace(self, platform=platform)

    def with_network(self, mode: wit.NetMode) -> "State":
        return replace(self, network=mode)

    def run(self, args: list[str]) -> "Exec":
        """Run a process on this filesystem."""
        return Exec(self, list(args))

    def run_shell(self, command: str) -> "Exec":
        """Run `/bin/sh -c COMMAND` on this filesystem."""
        return self.run(["/bin/sh", "-c", command])

    def file(self, action: "_FileAction", metadata: Metadata = Metadata()) -> "State":
        """Apply one file action (`mkfile`, `mkdir`, `copy`, `rm`, `symlink`)."""
        inputs: list = []

        def add_input(output) -> int:
            for i, known in enumerate(inputs):
                if known[0] is output[0] and known[1] == output[1]:
                    return i
            inputs.append(output)
            return len(inputs) - 1

        base = add_input(self.output) if self.output else -1
        secondary = -1
        if isinstance(action, _Copy) and action.source.output:
            secondary = add_input(action.source.output)
        kind = action.to_wit(self)
        # BuildKit's FileOp walks the base, then the copy source.
        order = [i for i in dict.fromkeys([base, secondary]) if i >= 0]
        vertex = _Vertex(
            wit.OpKind_File(wit.FileOp([wit.FileAction(base, secondary, 0, kind)])),
            inputs, None, metadata.cap("file.base"), order,
        )
        return replace(self, output=(vertex, 0))

    def marshal(self) -> wit.Definition:
        """The definition whose result is this state's filesystem."""
        m = _Marshaller()
        result = None
        if self.output:
            result = wit.OpOutput(m.visit(self.output[0]), self.output[1])
        return wit.Definition(m.ops, m.metadata, None, result)


def scratch() -> State:
    """An empty filesystem."""
    return State()


@dataclass
class Source:
    """A source op: an image, a local directory, a git repository, an HTTP file."""

    identifier: str
    attrs: dict = field(default_factory=dict)
    platform: wit.Platform | None = None
    metadata: Metadata = Metadata()

    @staticmethod
    def image(reference: str) -> "Source":
        """`docker-image://<normalised reference>`; raises ValueError for a bad one."""
        from .image import ImageRef

        return Source("docker-image://" + ImageRef.parse(reference).normalized())

    @staticmethod
    def local(name: str) -> "Source":
        """`local://<name>`: a directory the client sends (`context`, `dockerfile`)."""
        return Source(f"local://{name}")

    @staticmethod
    def http(url: str) -> "Source":
        return Source(url)

    def attr(self, key: str, value: str) -> "Source":
        return replace(self, attrs={**self.attrs, key: value})

    def with_platform(self, platform: wit.Platform) -> "Source":
        return replace(self, platform=platform)

    def with_metadata(self, metadata: Metadata) -> "Source":
        return replace(self, metadata=metadata.cap(*self.metadata.caps))

    def state(self) -> State:
        scheme = self.identifier.split("://", 1)[0]
        caps = [c for c in [_SOURCE_CAPS.get(scheme)] if c]
        for key, value in self.attrs.items():
            cap = _attr_cap(key, value)
            if cap:
                caps.append(cap)
        vertex = _Vertex(
            wit.OpKind_Source(wit.SourceOp(self.identifier, sorted(self.attrs.items()))),
            [], self.platform, self.metadata.cap(*caps),
        )
        return State(output=(vertex, 0), platform=self.platform)


_SOURCE_CAPS = {
    "docker-image": "source.image", "local": "source.local", "git": "source.git",
    "http": "source.http", "https": "source.http", "oci-layout": "source.ocilayout",
}
# The LLB capability a source attribute needs (BuildKit's names, as its Go client adds them).
_ATTR_CAPS = {
    "image.layerlimit": "source.image.layerlimit",
    "image.checksum": "source.image.checksum",
    "local.unique": "source.local.unique",
    "local.session": "source.local.sessionid",
    "local.includepattern": "source.local.includepatterns",
    "local.followpaths": "source.local.followpaths",
    "local.excludepatterns": "source.local.excludepatterns",
    "local.sharedkeyhint": "source.local.sharedkeyhint",
    "local.metadatatransfer": "source.local.metadatatransfer",
    "git.keepgitdir": "source.git.keepgitdir",
    "git.fullurl": "source.git.fullurl",
    "git.knownsshhosts": "source.git.knownsshhosts",
    "git.mountsshsock": "source.git.mountsshsock",
    "git.checksum": "source.git.checksum",
    "git.skipsubmodules": "source.git.skipsubmodules",
    "git.mtime": "source.git.mtime",
    "git.fetchbycommit": "source.git.fetchbycommit",
    "git.bundle": "source.git.bundle",
    "git.checkoutbundle": "source.git.checkoutbundle",
    "http.checksum": "source.http.checksum",
    "http.perm": "source.http.perm",
    # BuildKit's cap name carries this typo on purpose.
    "http.uid": "soruce.http.uidgid",
    "http.gid": "soruce.http.uidgid",
    "http.authheadersecret": "source.http.auth",
    "http.sig.pubkey": "source.http.signatureverify",
    "http.sig.signature": "source.http.signatureverify",
}


def _attr_cap(key: str, value: str) -> str | None:
    if key == "image.resolvemode":
        # Only the force-pull mode needs the cap.
        return "source.image.resolvemode" if value == "pull" else None
    if key.startswith("http.header."):
        return "source.http.header"
    return _ATTR_CAPS.get(key)


@dataclass
class Exec:
    """A process to run; `build()` makes the op."""

    base: State
    args: list
    mounts: list = field(default_factory=list)  # (dest, State | None, kind, options)
    metadata: Metadata = Metadata()

    def with_metadata(self, metadata: Metadata) -> "Exec":
        return replace(self, metadata=metadata)

    def mount(self, dest: str, source: State, readonly: bool = False) -> "Exec":
        """Bind `source`'s filesystem at `dest`; writable mounts are outputs of the op."""
        return replace(self, mounts=self.mounts + [(dest, source, "bind", readonly)])

    def cache(self, dest: str, id: str, sharing: wit.CacheSharing = wit.CacheSharing.SHARED) -> "Exec":
        """A cache mount that outlives the step (`RUN --mount=type=cache`)."""
        return replace(self, mounts=self.mounts + [(dest, None, "cache", (id, sharing))])

    def build(self) -> "ExecState":
        """Finish the op: mounts sorted by destination after the root, outputs numbered as
        BuildKit's Go client does (read-only and cache mounts produce none)."""
        base = self.base
        mounts = sorted([("/", base, "bind", False)] + self.mounts, key=lambda m: m[0])
        inputs: list = []
        wit_mounts = []
        outputs = []
        caps = ["exec.meta.base", "exec.meta.setsdefaultpath"]
        for dest, source, kind, options in mounts:
            output = source.output if source else None
            index = -1
            if output:
                index = next((i for i, o in enumerate(inputs) if o[0] is output[0] and o[1] == output[1]), -1)
                if index < 0:
                    inputs.append(output)
                    index = len(inputs) - 1
            if kind == "bind":
                if output:
                    caps.append("exec.mount.bind")
                out = -1 if options else len(outputs)
                if not options:
                    outputs.append(dest)
                wit_mounts.append(wit.Mount(
                    index, "", dest, out, options, wit.MountType.BIND, None, None, None, None,
                    "", wit.MountContentCache.DEFAULT))
            else:
                caps += ["exec.mount.cache", "exec.mount.cache.sharing"]
                wit_mounts.append(wit.Mount(
                    index, "", dest, -1, False, wit.MountType.CACHE, None,
                    wit.CacheOpt(options[0], options[1]), None, None, "",
                    wit.MountContentCache.DEFAULT))
        network = base.network or wit.NetMode.UNSET
        if network != wit.NetMode.UNSET:
            caps.append("exec.meta.network")
        meta = wit.Meta(
            list(self.args), [f"{k}={v}" for k, v in base.env], base.get_dir(), base.user or "",
            None, [], "", [], "", True, [],
        )
        kind = wit.OpKind_Exec(wit.ExecOp(meta, wit_mounts, network, wit.SecurityMode.SANDBOX, [], []))
        platform = base.platform or Platform.linux_amd64()
        vertex = _Vertex(kind, inputs, platform, self.metadata.cap(*caps))
        return ExecState(base, vertex, outputs)


@dataclass(frozen=True)
class ExecState:
    """A finished exec: its root filesystem and its writable mounts are states."""

    base: State
    vertex: _Vertex
    outputs: list

    def root(self) -> State:
        return replace(self.base, output=(self.vertex, self.outputs.index("/")))

    def get_mount(self, dest: str) -> State | None:
        if dest not in self.outputs:
            return None
        return replace(self.base, output=(self.vertex, self.outputs.index(dest)))


class _FileAction:
    def to_wit(self, state: State):
        raise NotImplementedError


@dataclass
class _Mkfile(_FileAction):
    path: str
    mode: int
    data: bytes

    def to_wit(self, state):
        return wit.FileActionKind_Mkfile(
            wit.MkfileAction(_resolve_keep_slash(state.get_dir(), self.path), self.mode, self.data, None, -1))


@dataclass
class _Mkdir(_FileAction):
    path: str
    mode: int
    make_parents: bool

    def to_wit(self, state):
        return wit.FileActionKind_Mkdir(
            wit.MkdirAction(_resolve_keep_slash(state.get_dir(), self.path), self.mode, self.make_parents, None, -1))


@dataclass
class _Rm(_FileAction):
    path: str
    allow_not_found: bool

    def to_wit(self, state):
        return wit.FileActionKind_Rm(
            wit.RmAction(_resolve_keep_slash(state.get_dir(), self.path), self.allow_not_found, False))


@dataclass
class _Symlink(_FileAction):
    oldpath: str
    newpath: str

    def to_wit(self, state):
        return wit.FileActionKind_Symlink(
            wit.SymlinkAction(self.oldpath, _resolve_keep_slash(state.get_dir(), self.newpath), None, -1))


@dataclass
class _Copy(_FileAction):
    source: State
    src: str
    dest: str
    mode: int = -1

    def to_wit(self, state):
        src = clean_path(self.src if self.src.startswith("/") else f"{self.source.get_dir()}/{self.src}")
        return wit.FileActionKind_Copy(wit.CopyAction(
            src, _resolve_keep_slash(state.get_dir(), self.dest), None, self.mode,
            True, True, False, True, True, True, -1, [], [], False, "", []))


def mkfile(path: str, mode: int, data: bytes | str) -> _FileAction:
    """Create a file (a relative path is taken from the state's working directory)."""
    return _Mkfile(path, mode, data.encode() if isinstance(data, str) else bytes(data))


def mkdir(path: str, mode: int = 0o755, make_parents: bool = True) -> _FileAction:
    return _Mkdir(path, mode, make_parents)


def rm(path: str, allow_not_found: bool = False) -> _FileAction:
    return _Rm(path, allow_not_found)


def symlink(oldpath: str, newpath: str) -> _FileAction:
    return _Symlink(oldpath, newpath)


def copy(source: State, src: str, dest: str, mode: int = -1) -> _FileAction:
    """Copy `src` of `source` (wildcards allowed, directories by their contents) to `dest`."""
    return _Copy(source, src, dest, mode)


class _Marshaller:
    """Post-order flattening; equal ops (by content) become one, their metadata merged."""

    def __init__(self):
        self.ops: list = []
        self.metadata: list = []
        self._by_vertex: dict = {}
        self._by_content: dict = {}

    def visit(self, vertex: _Vertex) -> int:
        if id(vertex) in self._by_vertex:
            return self._by_vertex[id(vertex)]
        positions = [0] * len(vertex.inputs)
        order = vertex.visit_order if vertex.visit_order is not None else range(len(vertex.inputs))
        for i in order:
            positions[i] = self.visit(vertex.inputs[i][0])
        op = wit.Op(
            [wit.OpOutput(p, o[1]) for p, o in zip(positions, vertex.inputs)],
            vertex.kind, vertex.platform, wit.WorkerConstraints([]),
        )
        key = repr(op)
        if key in self._by_content:
            position = self._by_content[key]
            # A later visit of an equal op adds its caps and descriptions, as BuildKit does.
            index = next(i for i, (p, _) in enumerate(self.metadata) if p == position)
            old = self.metadata[index][1]
            described = dict(old.description)
            described.update(vertex.metadata.description)
            caps = dict(old.caps)
            caps.update((c, True) for c in vertex.metadata.caps)
            old.description = sorted(described.items())
            old.caps = sorted(caps.items())
            old.ignore_cache = old.ignore_cache or vertex.metadata.ignore_cache
        else:
            position = len(self.ops)
            self.ops.append(op)
            self.metadata.append((position, vertex.metadata.to_wit()))
            self._by_content[key] = position
        self._by_vertex[id(vertex)] = position
        return position


def followpaths(paths: list[str]) -> str:
    """The `local.followpaths` attribute value for these paths."""
    return json.dumps(paths, separators=(",", ":"))
