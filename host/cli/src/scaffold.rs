//! `buildwit frontend new`: a ready frontend crate (a steps-file frontend with its tests),
//! so the first build of a new frontend is one command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

const CARGO_TOML: &str = include_str!("../templates/frontend/Cargo.toml.in");
const LIB_RS: &str = include_str!("../templates/frontend/lib.rs.in");
// The Python project is the tree's example, renamed, with a script that tests and builds it.
const APP_PY: &str = include_str!("../../../examples/python-steps/app.py");
const TEST_APP_PY: &str = include_str!("../../../examples/python-steps/test_app.py");
const BUILD_SH: &str = include_str!("../templates/frontend-python/build.sh.in");

/// The SDK of the buildwit this binary was built from.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk");

/// The languages `frontend new` makes projects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// A crate on `buildwit-sdk`, built with cargo.
    Rust,
    /// A module on `sdk/python`, built with componentize-py.
    Python,
}

/// Make the frontend project `dir` (its name is the frontend's name) in `lang`, against the
/// SDK at `sdk` (default: the one this buildwit was built from; the Python SDK is its
/// `python/` folder). Returns the file the project's build makes, relative to `dir`.
pub fn new_frontend(dir: &Path, lang: Lang, sdk: Option<&Path>) -> Result<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("give the frontend a name: buildwit frontend new NAME")?;
    check_name(name)?;
    ensure!(
        std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none()),
        "{} exists and is not empty",
        dir.display()
    );
    let sdk = match sdk {
        Some(sdk) => sdk.to_path_buf(),
        None => PathBuf::from(BUILT_SDK),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the buildwit SDK is not at {}: give its path (the sdk/ folder of a buildwit checkout) with --sdk",
            sdk.display()
        )
    })?;
    ensure!(
        sdk.join("Cargo.toml").exists(),
        "{} is not the buildwit SDK (it has no Cargo.toml)",
        sdk.display()
    );

    if lang == Lang::Python {
        return new_python(dir, name, &sdk);
    }
    let krate = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{type}}", &type_name(name))
            .replace("{{sdk}}", &format!("{:?}", sdk.display().to_string()))
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let write = |path: &str, data: String| {
        std::fs::write(dir.join(path), data).with_context(|| format!("writing {path}"))
    };
    write("Cargo.toml", fill(CARGO_TOML))?;
    write("src/lib.rs", fill(LIB_RS))?;
    write(".gitignore", "/target\n".into())?;
    // The versions the SDK is built and tested with (cargo drops what the crate does not use).
    if let Ok(lock) = std::fs::read_to_string(sdk.join("../Cargo.lock")) {
        write("Cargo.lock", lock)?;
    }
    Ok(format!("target/wasm32-wasip2/release/{krate}.wasm"))
}

/// The Python project: `app.py` (the steps frontend), `test_app.py` and `build.sh`, which
/// runs the tests natively and makes `NAME.wasm` with componentize-py.
fn new_python(dir: &Path, name: &str, sdk: &Path) -> Result<String> {
    let python_sdk = sdk.join("python");
    let wit = sdk.join("../wit").canonicalize().unwrap_or_default();
    ensure!(
        python_sdk.join("buildwit_sdk/__init__.py").exists() && wit.join("frontend.wit").exists(),
        "{} has no Python SDK (python/buildwit_sdk) or no WIT contract (../wit) beside it",
        sdk.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |path: &str, data: String| {
        std::fs::write(dir.join(path), data).with_context(|| format!("writing {path}"))
    };
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    write(
        "app.py",
        APP_PY
            .replacen("\"\"\"steps:", &format!("\"\"\"{name}:"), 1)
            .replacen("name = \"steps\"", &format!("name = {name:?}"), 1),
    )?;
    write("test_app.py", TEST_APP_PY.to_string())?;
    write(
        "build.sh",
        BUILD_SH
            .replace("{{name}}", name)
            .replace("{{wit}}", &quote(&wit))
            .replace("{{sdk}}", &quote(&python_sdk)),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("build.sh"), std::fs::Permissions::from_mode(0o755))?;
    }
    write(
        ".gitignore",
        format!("/.bindings\n/{name}.wasm\n__pycache__/\n"),
    )?;
    Ok(format!("{name}.wasm"))
}

/// A package name cargo takes and a Rust type can be made of.
fn check_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ensure!(
        ok,
        "{name:?} is not a usable frontend name: use letters, digits, '-' and '_', starting with a letter"
    );
    Ok(())
}

/// `my-frontend` → `MyFrontend`; `StateFrontend` where the name is one the template uses.
fn type_name(name: &str) -> String {
    const TAKEN: &[&str] = &[
        "BuildResult",
        "Client",
        "Error",
        "Frontend",
        "FrontendInfo",
        "ImageConfig",
        "ImageRef",
        "Metadata",
        "OpKind",
        "Platform",
        "ResolveImageRequest",
        "ResolveMode",
        "Source",
        "State",
    ];
    let base: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    match TAKEN.contains(&base.as_str()) {
        true => base + "Frontend",
        false => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_types_and_bad_names_are_refused() {
        assert_eq!(type_name("my-frontend"), "MyFrontend");
        assert_eq!(type_name("steps_v2"), "StepsV2");
        assert_eq!(type_name("state"), "StateFrontend");
        assert!(check_name("steps").is_ok());
        for bad in ["1steps", "my frontend", "", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
