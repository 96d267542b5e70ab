"""steps: a buildwit frontend in Python.

It builds an image from a steps file in the build context (`Stepfile`, or the file the
`filename` option names)::

    FROM busybox:1.36
    RUN echo hello > /greeting

(`FROM scratch` starts from nothing.) It is the frontend `buildwit frontend new` makes in
Rust, step for step: both give the same LLB for the same steps file.

Build the component (from a buildwit checkout; BUILDWIT is its path)::

    componentize-py -d BUILDWIT/wit -w frontend componentize app -p . -p BUILDWIT/sdk/python -o steps.wasm

then `buildwit build --frontend-file steps.wasm DIR` runs it and `buildwit frontend push
steps.wasm registry:5000/me/steps:1` publishes it for `# syntax=`.
"""

import json

from buildwit_sdk import BuildError, BuildResult, Client, Frontend, ImageConfig, ImageRef, Platform, export, llb


class Steps(Frontend):
    name = "steps"
    version = "0.1.0"

    def build(self, client: Client) -> BuildResult:
        filename = client.option("filename") or "Stepfile"
        text = read_file(client, filename)
        # The platform the build asks for, else the worker's own.
        requested = client.option("platform")
        try:
            platform = client.default_platform() if requested is None else Platform.parse(requested)
        except ValueError as e:
            raise BuildError.invalid(str(e)) from None
        image = None
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, arg = (line.split(None, 1) + [""])[:2]
            word, arg = word.upper(), arg.strip()
            try:
                image = step(client, image, word, arg, platform)
            except BuildError as e:
                raise e.at(filename, number) from None
        if image is None:
            raise BuildError.invalid(f"{filename} has no FROM").at(filename, 1)
        state, config = image
        return BuildResult(client.solve(state)).with_image_config(config)


def step(client, image, word, arg, platform):
    """The image after one step: (state, config)."""
    if word == "FROM" and image is None:
        if arg == "scratch":
            return llb.scratch().with_platform(platform), ImageConfig.scratch(platform)
        return base(client, arg, platform)
    if word == "FROM":
        raise BuildError.invalid("a second FROM")
    if image is None:
        raise BuildError.invalid("the first step must be FROM")
    if word == "RUN":
        state, config = image
        name = f"RUN {arg}"
        state = state.run_shell(arg).with_metadata(llb.Metadata().custom_name(name)).build().root()
        config.add_history(name, Steps.name)
        return state, config
    raise BuildError.invalid(f"unknown step {word}")


def base(client, name, platform):
    """The base image for `platform`, pinned by digest, with its config applied (env,
    working directory, user)."""
    try:
        reference = ImageRef.parse(name).normalized()
    except ValueError as e:
        raise BuildError.invalid(f"FROM {name}: {e}") from None
    resolved = client.resolve_image_config(
        reference, platform, f"[internal] load metadata for {reference}")
    try:
        config = ImageConfig.parse(resolved.config)
    except ValueError as e:
        raise BuildError.invalid(str(e)) from None
    pinned = reference if "@" in reference else f"{reference}@{resolved.digest}"
    state = (llb.Source.image(pinned)
             .with_platform(platform)
             .with_metadata(llb.Metadata().custom_name(f"FROM {reference}"))
             .state()
             .with_platform(platform))
    return config.apply(state), config


def read_file(client, filename):
    """The file `filename` of the `dockerfile` local (the directory of the steps file)."""
    local = (llb.Source.local("dockerfile")
             .attr("local.followpaths", json.dumps([filename], ensure_ascii=False))
             .attr("local.sharedkeyhint", filename)
             .with_metadata(llb.Metadata().custom_name(f"[internal] load build definition from {filename}"))
             .state())
    ref = client.solve(local)
    if ref is None:
        raise BuildError.internal("the local source solved to nothing")
    try:
        data = client.read_file(ref, filename)
    except BuildError as e:
        raise BuildError.not_found(f"reading {filename}: {e.message}") from None
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BuildError.invalid(f"{filename} is not UTF-8") from None


# What componentize-py exports as the frontend.
Builder = export(Steps)
