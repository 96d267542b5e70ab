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
        let result = F::build(&WitClient)?;
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
