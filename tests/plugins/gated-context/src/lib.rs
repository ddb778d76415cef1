//! Answers `authorize` (everyone may write) only once the key `gate` is in its key-value
//! store; until then it waits, polling the store, and at its deadline it refuses as
//! unavailable. Tests open the gate from outside to decide how long the provider takes.
//! For objects whose id starts with `W-` it tries to remember them in its store while
//! answering, which a context provider may not do.

use std::time::{Duration, Instant};

use veche_plugin_api::*;

struct Gated;

impl Plugin for Gated {
    fn init() -> Result<(), String> {
        log::info("gated-context ready: waiting for the key `gate`");
        Ok(())
    }

    fn authorize(
        cx: Invocation,
        obj: ObjectRef,
        users: Vec<String>,
    ) -> Result<Vec<Access>, PluginError> {
        if obj.id.starts_with("W-") {
            kv::set(&format!("seen:{}", obj.id), b"1")?;
        }
        let started = Instant::now();
        let budget = Duration::from_millis(cx.deadline_ms.into());
        while kv::get("gate")?.is_none() {
            if started.elapsed() + Duration::from_millis(50) >= budget {
                return Err(PluginError::Unavailable("the gate stayed closed".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(users.iter().map(|_| Access::Write).collect())
    }

    fn validate(_cx: Invocation, _obj: ObjectRef) -> Result<(), PluginError> {
        Ok(())
    }
}

register_plugin!(Gated);
