#![allow(unsafe_code)] // wit-bindgen's generated exports are `unsafe extern "C"` functions.
//! Exports `veche:plugin/bot@1.0.0`, an API major this node does not implement.

wit_bindgen::generate!({ path: "wit", world: "future-plugin" });

/// The plugin.
#[derive(Debug)]
pub struct Future;

impl exports::veche::plugin::lifecycle::Guest for Future {
    fn init() -> Result<(), String> {
        Ok(())
    }
}

impl exports::veche::plugin::bot::Guest for Future {
    fn on_ping() -> u32 {
        1
    }
}

#[cfg(target_arch = "wasm32")]
export!(Future);
