//! Dev mode: watches the folder each plugin was installed from and reloads a plugin within a
//! second of its component or manifest changing. Bot events wait in the durable inbox while
//! the new version loads, so none is lost; calls in flight finish on the old version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Plugins;

const POLL: Duration = Duration::from_millis(250);

/// What identifies a version of the files: modification time and size of each.
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn stamp(source: &Path, component: Option<&str>) -> Stamp {
    let mut files = vec![source.join("plugin.toml")];
    if let Some(c) = component {
        files.push(source.join(c));
    }
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            (p, meta)
        })
        .collect()
}

/// Whether the files in `source` are not those the running version was installed from.
fn differs(source: &Path, a: &super::Active) -> bool {
    let manifest = std::fs::read_to_string(source.join("plugin.toml"));
    let component = std::fs::read(source.join(&a.env.manifest.component));
    match (manifest, component) {
        (Ok(m), Ok(c)) => m != a.row.manifest || super::runtime::sha256_hex(&c) != a.row.sha256,
        _ => false,
    }
}

pub(super) fn spawn(plugins: Plugins) {
    let stop = plugins.shared.stop.clone();
    let tasks = plugins.shared.tasks.clone();
    tasks.spawn(async move {
        tracing::info!("plugin dev mode: watching the folders plugins were installed from");
        let mut seen: HashMap<String, Stamp> = HashMap::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            for a in plugins.all() {
                let source = PathBuf::from(&a.row.source);
                let now = stamp(&source, Some(&a.env.manifest.component));
                let changed = match seen.insert(a.env.id.clone(), now.clone()) {
                    Some(before) => before != now,
                    // First seen: a build may have landed since it was installed.
                    None => differs(&source, &a),
                };
                // Both files present and something changed: a build finished.
                if changed && now.iter().all(|(_, m)| m.is_some()) {
                    match plugins.reload(&a.env.id, "dev-mode").await {
                        Ok(info) => tracing::info!(plugin = %info.id, version = %info.version, "plugin reloaded"),
                        Err(e) => tracing::error!(plugin = %a.env.id, error = %e, "plugin reload failed; the previous version keeps running"),
                    }
                    let after = stamp(&source, Some(&a.env.manifest.component));
                    seen.insert(a.env.id.clone(), after);
                }
            }
        }
    });
}
