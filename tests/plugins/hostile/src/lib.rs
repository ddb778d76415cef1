//! Misbehaves on purpose, as its `mode` configuration says: `loop` spins forever, `alloc`
//! allocates without bound, `panic` panics, anything else behaves.

use veche_plugin_api::*;

fn misbehave() -> Result<(), PluginError> {
    match config::get("mode").as_deref() {
        Some("loop") => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Some("alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Some("panic") => panic!("hostile plugin panicking on purpose"),
        _ => Ok(()),
    }
}

struct Hostile;

impl Plugin for Hostile {
    fn authorize(
        _cx: Invocation,
        _obj: ObjectRef,
        users: Vec<String>,
    ) -> Result<Vec<Access>, PluginError> {
        misbehave()?;
        Ok(users.iter().map(|_| Access::Write).collect())
    }

    fn validate(_cx: Invocation, _obj: ObjectRef) -> Result<(), PluginError> {
        Ok(())
    }

    fn on_event(_cx: Invocation, _evt: BusinessEvent) -> Result<Vec<BotAction>, PluginError> {
        misbehave()?;
        Ok(Vec::new())
    }
}

register_plugin!(Hostile);
