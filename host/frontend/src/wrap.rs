//! Core modules built against the SDK, wrapped into components. The runtime and the build
//! script that builds the workspace's own frontends both wrap through here.

/// The component a frontend file holds: a component as it is; a core module built against
/// the SDK (`cargo build --target wasm32-unknown-unknown`, which carries the component type
/// wit-bindgen embeds) wrapped into one, as `wasm-tools component new` does, so the same
/// module always gives the same component.
pub fn component_of(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if !wasmparser::Parser::is_core_wasm(bytes) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    // wit-bindgen leaves the component's type in `component-type*` custom sections.
    let typed = wasmparser::Parser::new(0).parse_all(bytes).any(|p| {
        matches!(p, Ok(wasmparser::Payload::CustomSection(c)) if c.name().starts_with("component-type"))
    });
    if !typed {
        return Err(
            "it is a core Wasm module, not a component, and carries no component type to wrap it \
             with: build it with buildwit-sdk"
                .into(),
        );
    }
    wit_component::ComponentEncoder::default()
        .module(bytes)
        .and_then(|e| e.validate(true).encode())
        .map(std::borrow::Cow::Owned)
        .map_err(|e| format!("it is a core Wasm module that does not wrap into a component: {e:#}"))
}
