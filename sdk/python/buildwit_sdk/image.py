"""Image references and the OCI image config a frontend returns as `containerimage.config`.

`ImageConfig` starts from the base image's config (what `Client.resolve_image_config`
gave) or from scratch, carries its environment, working directory and user into the steps
(`apply`), takes what the build changes, and goes back with the result
(`BuildResult.with_image_config`). Fields it does not name stay as the base had them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass

from wit_world.imports import llb as wit

from .llb import State

__all__ = ["ImageConfig", "ImageRef"]

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:[._-]+[a-z0-9]+)*")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference, normalised as Docker does (`alpine` is
    `docker.io/library/alpine:latest`)."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @staticmethod
    def parse(text: str) -> "ImageRef":
        """Raises ValueError("invalid reference format...") for what Docker refuses."""
        bad = ValueError("invalid reference format")
        if not text:
            raise bad
        rest, digest = text, None
        if "@" in text:
            rest, digest = text.split("@", 1)
            algo, _, hexpart = digest.partition(":")
            if not algo or len(hexpart) < 32 or not re.fullmatch(r"[0-9a-fA-F]+", hexpart):
                raise bad
        last_slash = rest.rfind("/") + 1
        name, tag = rest, None
        colon = rest[last_slash:].rfind(":")
        if colon >= 0:
            name, tag = rest[: last_slash + colon], rest[last_slash + colon + 1 :]
            if not _TAG.fullmatch(tag):
                raise bad
        first, sep, remainder = name.partition("/")
        if sep and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
            domain, path = first, remainder
        else:
            domain, path = "docker.io", name
        if domain == "docker.io" and "/" not in path:
            path = f"library/{path}"
        if not path:
            raise bad
        if path != path.lower():
            raise ValueError(f"invalid reference format: repository name ({path}) must be lowercase")
        if not all(_COMPONENT.fullmatch(c) for c in path.split("/")):
            raise bad
        return ImageRef(domain, path, tag, digest)

    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def normalized(self) -> str:
        text = self.name()
        if self.tag is not None:
            text += f":{self.tag}"
        elif self.digest is None:
            text += ":latest"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


class ImageConfig:
    """An image config (`application/vnd.oci.image.config.v1+json`) as a JSON object."""

    def __init__(self, value: dict):
        self.value = value

    @staticmethod
    def scratch(platform: wit.Platform) -> "ImageConfig":
        """The config of an image with no base (`FROM scratch`) for `platform`."""
        value = {
            "architecture": platform.architecture, "os": platform.os, "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
        if platform.variant:
            value["variant"] = platform.variant
        return ImageConfig(value)

    @staticmethod
    def parse(data: bytes) -> "ImageConfig":
        """A base image's config as the registry holds it; ValueError if it is not a JSON object."""
        try:
            value = json.loads(data)
        except ValueError as e:
            raise ValueError(f"image config: {e}") from None
        if not isinstance(value, dict):
            raise ValueError("an image config must be a JSON object")
        return ImageConfig(value)

    def to_json(self) -> bytes:
        """Compact JSON, keys in the order they came, as the Rust SDK writes it."""
        return json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()

    def _runtime(self) -> dict:
        runtime = self.value.get("config")
        if not isinstance(runtime, dict):
            runtime = self.value["config"] = {}
        return runtime

    def _get(self, key: str):
        runtime = self.value.get("config")
        return runtime.get(key) if isinstance(runtime, dict) else None

    def env(self) -> list[tuple[str, str]]:
        """`Env` as (name, value) pairs, in order."""
        pairs = []
        for item in self._get("Env") or []:
            if isinstance(item, str):
                name, _, value = item.partition("=")
                pairs.append((name, value))
        return pairs

    def set_env(self, name: str, value: str) -> None:
        """Set one variable, in place if it is there, else at the end."""
        env = self.env()
        for i, (k, _) in enumerate(env):
            if k == name:
                env[i] = (name, value)
                break
        else:
            env.append((name, value))
        self._runtime()["Env"] = [f"{k}={v}" for k, v in env]

    def working_dir(self) -> str:
        value = self._get("WorkingDir")
        return value if isinstance(value, str) else ""

    def set_working_dir(self, path: str) -> None:
        self._runtime()["WorkingDir"] = path

    def user(self) -> str:
        value = self._get("User")
        return value if isinstance(value, str) else ""

    def set_user(self, user: str) -> None:
        self._runtime()["User"] = user

    def set_entrypoint(self, entrypoint: list[str]) -> None:
        """As Docker's ENTRYPOINT, this drops the base image's Cmd."""
        runtime = self._runtime()
        runtime["Entrypoint"] = list(entrypoint)
        runtime["Cmd"] = None

    def set_cmd(self, cmd: list[str]) -> None:
        self._runtime()["Cmd"] = list(cmd)

    def set_label(self, name: str, value: str) -> None:
        runtime = self._runtime()
        if not isinstance(runtime.get("Labels"), dict):
            runtime["Labels"] = {}
        runtime["Labels"][name] = value

    def add_history(self, created_by: str, comment: str = "", empty_layer: bool = False) -> None:
        """Record a step; `empty_layer` for a step that changes only the config (ENV)."""
        entry: dict = {"created_by": created_by}
        if comment:
            entry["comment"] = comment
        if empty_layer:
            entry["empty_layer"] = True
        history = self.value.get("history")
        if isinstance(history, list):
            history.append(entry)
        else:
            self.value["history"] = [entry]

    def apply(self, state: State) -> State:
        """`state` with this config's environment, working directory and user."""
        for name, value in self.env():
            state = state.with_env(name, value)
        if self.working_dir():
            state = state.dir(self.working_dir())
        if self.user():
            state = state.with_user(self.user())
        return state

    def clone(self) -> "ImageConfig":
        return ImageConfig(copy.deepcopy(self.value))
