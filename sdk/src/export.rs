//! The glue between a [`Frontend`] and the WIT export.

use std::marker::PhantomData;

use crate::bindings::buildwit::frontend::gateway as wit;
use crate::bindings::exports::buildwit::frontend::builder as exports;
use crate::client::{Client, WitClient, WitReference};
use crate::{BuildResult, Error, FrontendInfo, Reference};

/// A frontend. Implement it and export it with [`crate::export_frontend!`].
pub trait Frontend {
    /// Name, version and channel.
    fn info() -> FrontendInfo;

    /// Run the build described by the client's options and inputs.
    fn build(client: &dyn Client) -> Result<BuildResult, Error>;

    /// The subrequests `build` answers (the `requestid` option: `frontend.outline` for
    /// `--call outline`, `frontend.targets`, ...). None by default: the SDK then answers
    /// `frontend.subrequests.describe` with this list and refuses any other request with
    /// BuildKit's "unsupported request NAME", so a frontend never builds when it was asked
    /// something else.
    fn subrequests() -> Subrequests {
        Subrequests::Listed(Vec::new())
    }
}

/// Which subrequests reach [`Frontend::build`].
pub enum Subrequests {
    /// These, each answered by `build` with `result.json` (and `result.txt` for people);
    /// `frontend.subrequests.describe` lists them and is answered by the SDK.
    Listed(Vec<Subrequest>),
    /// Every request, answered or refused by `build` itself (a frontend that forwards to
    /// others, as the Dockerfile frontend does for `# syntax=`).
    All,
}

/// A subrequest as `frontend.subrequests.describe` lists it.
pub struct Subrequest {
    /// Such as `frontend.outline`.
    pub name: String,
    /// Its result format's version, such as `1.0.0`.
    pub version: String,
    /// One line for people.
    pub description: String,
}

/// BuildKit's name of the request that lists the others.
pub const DESCRIBE: &str = "frontend.subrequests.describe";

/// Run `F` on `client`: its `build`, or the SDK's answer to a subrequest it does not list.
pub fn run<F: Frontend>(client: &dyn Client) -> Result<BuildResult, Error> {
    let Some(request) = client.option("requestid").filter(|r| !r.is_empty()) else {
        return F::build(client);
    };
    let listed = match F::subrequests() {
        Subrequests::All => return F::build(client),
        Subrequests::Listed(listed) => listed,
    };
    if listed.iter().any(|s| s.name == request) {
        return F::build(client);
    }
    if request != DESCRIBE {
        return Err(Error::unsupported(format!("unsupported request {request}")));
    }
    let mut all = listed;
    all.push(Subrequest {
        name: DESCRIBE.into(),
        version: "1.0.0".into(),
        description: "List available subrequest types".into(),
    });
    let json: Vec<serde_json::Value> = all
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "version": s.version, "type": "rpc",
                "description": s.description,
                "metadata": [{"name": "result.json"}, {"name": "result.txt"}],
            })
        })
        .collect();
    let mut txt = String::from("NAME\tVERSION\tDESCRIPTION\n");
    for s in &all {
        let name = s.name.strip_prefix("frontend.").unwrap_or(&s.name);
        txt.push_str(&format!("{name}\t{}\t{}\n", s.version, s.description));
    }
    Ok(BuildResult::default()
        .with_metadata(
            "result.json",
            serde_json::to_vec_pretty(&json).expect("json"),
        )
        .with_metadata("result.txt", txt)
        .with_metadata("version", "1.0.0"))
}

/// Export a [`Frontend`] as the component's `builder` interface. On native targets it
/// expands to nothing, so the same crate can be unit-tested with [`crate::testing`].
#[macro_export]
macro_rules! export_frontend {
    ($frontend:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __BuildwitExportedFrontend = $crate::__Adapter<$frontend>;
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export_raw!(__BuildwitExportedFrontend with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub struct Adapter<F>(PhantomData<F>);

impl<F: Frontend> exports::Guest for Adapter<F> {
    fn info() -> FrontendInfo {
        F::info()
    }

    fn build() -> Result<exports::BuildResult, Error> {
        // A panic aborts the instance; hand its message to the host first so the build
        // error says what went wrong.
        std::panic::set_hook(Box::new(|info| {
            wit::log(wit::LogLevel::Error, &format!("frontend panicked: {info}"));
        }));
        let result = run::<F>(&WitClient)?;
        Ok(exports::BuildResult {
            ref_: result.reference.map(into_wit).transpose()?,
            refs: result
                .refs
                .into_iter()
                .map(|(k, r)| Ok((k, into_wit(r)?)))
                .collect::<Result<_, Error>>()?,
            metadata: result.metadata,
        })
    }
}

fn into_wit(reference: Reference) -> Result<wit::Reference, Error> {
    reference
        .into_backend::<WitReference>()
        .map(|r| r.0)
        .ok_or_else(|| Error::internal("a build result must hold references returned by solve"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MemoryGateway, run as run_test};

    struct Plain;
    impl Frontend for Plain {
        fn info() -> FrontendInfo {
            FrontendInfo::new("plain", "0.1.0", "stable")
        }
        fn build(_: &dyn Client) -> Result<BuildResult, Error> {
            Ok(BuildResult::default().with_metadata("built", "yes"))
        }
    }

    struct WithTargets;
    impl Frontend for WithTargets {
        fn info() -> FrontendInfo {
            FrontendInfo::new("with-targets", "0.1.0", "stable")
        }
        fn build(client: &dyn Client) -> Result<BuildResult, Error> {
            let answer = client.option("requestid").unwrap_or_else(|| "built".into());
            Ok(BuildResult::default().with_metadata("result.json", answer))
        }
        fn subrequests() -> Subrequests {
            Subrequests::Listed(vec![Subrequest {
                name: "frontend.targets".into(),
                version: "1.0.0".into(),
                description: "List all targets".into(),
            }])
        }
    }

    #[test]
    fn subrequests_a_frontend_does_not_list_are_refused_not_built() {
        let gw = MemoryGateway::new().option("requestid", "frontend.outline");
        let err = run_test::<Plain>(&gw).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Unsupported);
        assert_eq!(err.message, "unsupported request frontend.outline");
        // Without a request, or with an empty one, it builds.
        let out = run_test::<Plain>(&MemoryGateway::new().option("requestid", "")).unwrap();
        assert_eq!(out.metadata_str("built").as_deref(), Some("yes"));
    }

    #[test]
    fn describe_lists_what_the_frontend_answers() {
        let gw = MemoryGateway::new().option("requestid", DESCRIBE);
        let out = run_test::<WithTargets>(&gw).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&out.metadata_str("result.json").unwrap()).unwrap();
        let names: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["frontend.targets", DESCRIBE]);
        assert!(
            out.metadata_str("result.txt")
                .unwrap()
                .contains("targets\t1.0.0")
        );
        // A listed request reaches build.
        let gw = MemoryGateway::new().option("requestid", "frontend.targets");
        let out = run_test::<WithTargets>(&gw).unwrap();
        assert_eq!(
            out.metadata_str("result.json").as_deref(),
            Some("frontend.targets")
        );
        // Plain lists describe alone.
        let out = run_test::<Plain>(&MemoryGateway::new().option("requestid", DESCRIBE)).unwrap();
        assert!(out.metadata_str("result.json").unwrap().contains(DESCRIBE));
    }
}
