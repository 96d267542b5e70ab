//! The platforms this host can run build steps for: its own, and each one an emulator is
//! registered for in binfmt_misc (Debian's `qemu-user-static` registers `qemu-<arch>`
//! entries), found at start as BuildKit's worker lists what it can run.

use std::path::Path;

/// Where the kernel lists binfmt_misc registrations.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// `qemu-<name>` registrations and the platform each runs.
const EMULATED: &[(&str, &str)] = &[
    ("x86_64", "linux/amd64"),
    ("i386", "linux/386"),
    ("aarch64", "linux/arm64"),
    ("arm", "linux/arm/v7"),
    ("ppc64le", "linux/ppc64le"),
    ("s390x", "linux/s390x"),
    ("riscv64", "linux/riscv64"),
    ("mips64el", "linux/mips64le"),
    ("mips64", "linux/mips64"),
    ("loongarch64", "linux/loong64"),
];

/// This host's own platform and the ones it runs natively besides it.
pub fn native() -> Vec<String> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["linux/amd64".into(), "linux/386".into()],
        "aarch64" => vec!["linux/arm64".into(), "linux/arm/v7".into()],
        "x86" => vec!["linux/386".into()],
        "powerpc64" => vec!["linux/ppc64le".into()],
        "s390x" => vec!["linux/s390x".into()],
        "riscv64" => vec!["linux/riscv64".into()],
        other => vec![format!("linux/{other}")],
    }
}

/// The platforms steps can run on: [`native`] first, then those with an enabled emulator
/// registered under `binfmt_misc` (a directory laid out as `/proc/sys/fs/binfmt_misc`).
pub fn runnable(binfmt_misc: &Path) -> Vec<String> {
    let mut out = native();
    for (name, platform) in EMULATED {
        let Ok(entry) = std::fs::read_to_string(binfmt_misc.join(format!("qemu-{name}"))) else {
            continue;
        };
        let enabled = entry.lines().next() == Some("enabled");
        let interpreter = entry
            .lines()
            .find_map(|l| l.strip_prefix("interpreter "))
            .is_some_and(|i| Path::new(i).exists());
        // `F`: the kernel opens the interpreter at registration, so it works inside a
        // container's root filesystem too.
        let fixed = entry
            .lines()
            .find_map(|l| l.strip_prefix("flags: "))
            .is_some_and(|f| f.contains('F'));
        if enabled && interpreter && fixed && !out.iter().any(|p| p == platform) {
            out.push(platform.to_string());
        }
    }
    out
}

/// Whether a step for `os/arch[/variant]` runs on one of `platforms` (variants are not
/// told apart: an `arm64` host runs `arm64/v8`, an `arm/v7` emulator runs `arm/v6`).
pub fn can_run(platforms: &[String], platform: &str) -> bool {
    let os_arch = |p: &str| {
        let mut parts = p.split('/');
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    let wanted = os_arch(platform);
    platforms.iter().any(|p| os_arch(p) == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulators_registered_in_binfmt_misc_add_platforms() {
        let dir = tempfile::tempdir().unwrap();
        let interpreter = dir.path().join("qemu-aarch64-static");
        std::fs::write(&interpreter, b"").unwrap();
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            format!(
                "enabled\ninterpreter {}\nflags: PF\n",
                interpreter.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("qemu-s390x"),
            format!(
                "disabled\ninterpreter {}\nflags: PF\n",
                interpreter.display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("qemu-riscv64"),
            "enabled\ninterpreter /nonexistent/qemu\nflags: PF\n",
        )
        .unwrap();
        // Without `F`, the interpreter would be looked up inside the step's filesystem.
        std::fs::write(
            dir.path().join("qemu-ppc64le"),
            format!("enabled\ninterpreter {}\nflags: P\n", interpreter.display()),
        )
        .unwrap();
        let platforms = runnable(dir.path());
        assert_eq!(platforms[..native().len()], native()[..]);
        let has = |p: &str| platforms.iter().any(|q| q == p);
        let native_has = |p: &str| native().iter().any(|q| q == p);
        assert!(has("linux/arm64"));
        // Disabled, or its interpreter gone: not runnable.
        assert_eq!(has("linux/s390x"), native_has("linux/s390x"));
        assert_eq!(has("linux/riscv64"), native_has("linux/riscv64"));
        assert_eq!(has("linux/ppc64le"), native_has("linux/ppc64le"));
        assert!(can_run(&platforms, "linux/arm64/v8"));
        assert!(!can_run(&platforms, "windows/amd64"));
    }
}
