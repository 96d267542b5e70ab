//! `--output`, `-t` and `--push` combined as buildx combines them; the CLI and buildwitd
//! both read them this way.

use buildwit_exporter::{OutputError, OutputKind, OutputSpec, parse_output};

/// The outputs of a build: each `--output` spec; with none, `-t` or `--push` alone ask for
/// an image. The `-t` names and `--annotation`s go to every image output, and `--push`
/// pushes `type=image`.
pub fn combine(
    specs: &[String],
    tags: &[String],
    push: bool,
    annotations: &[String],
) -> Result<Vec<OutputSpec>, OutputError> {
    let mut outputs = specs
        .iter()
        .map(|s| parse_output(s))
        .collect::<Result<Vec<_>, _>>()?;
    if outputs.is_empty() && (!tags.is_empty() || push) {
        outputs.push(parse_output("type=image")?);
    }
    for o in &mut outputs {
        if matches!(
            o.kind,
            OutputKind::Image | OutputKind::Oci | OutputKind::Docker
        ) {
            for t in tags {
                if !o.names.contains(t) {
                    o.names.push(t.clone());
                }
            }
            if push && o.kind == OutputKind::Image {
                o.push = true;
            }
            for a in annotations {
                o.annotate(a)?;
            }
        }
    }
    Ok(outputs)
}
