//! Log output: human-readable text on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Libraries that speak at INFO about their own routine (tantivy at every commit and merge,
/// wasmtime's compiler for every function, libp2p for every dial): below WARN they are the
/// node's internals, not news for its operator. `[log] level` brings them back by naming
/// them (`info,tantivy=info`), `RUST_LOG` replaces the whole filter.
const QUIET: &[&str] = &[
    "tantivy",
    "cranelift",
    "wasmtime",
    "wasmtime_cranelift",
    "libp2p",
    "multistream_select",
    "yamux",
    "hickory",
    "sqlx",
    "hyper",
    "h2",
    "rustls",
    "quinn",
    "quinn_proto",
    "reqwest",
    "lettre",
];

/// The filter `[log] level` stands for: the level as written, with the libraries in
/// [`QUIET`] at WARN unless the level names them or is quieter than WARN itself.
pub fn default_filter(level: &str) -> String {
    let directives: Vec<&str> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    let quieter_than_warn = directives
        .iter()
        .any(|d| !d.contains('=') && matches!(d.to_ascii_lowercase().as_str(), "error" | "off"));
    let mut out = directives.join(",");
    if quieter_than_warn {
        return out;
    }
    for target in QUIET {
        let named = directives.iter().any(|d| {
            let t = d.split(['=', '[']).next().unwrap_or_default();
            d.contains('=') && (t == *target || t.starts_with(&format!("{target}::")))
        });
        if !named {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(target);
            out.push_str("=warn");
        }
    }
    out
}

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`. Logs go to stderr so that
/// stdout carries only what a command prints for its user.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter(&config.level)))
        .unwrap_or_else(|_| EnvFilter::new(default_filter("info")));
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.try_init()
    };
    // A subscriber may already be installed (tests); keep that one.
    drop(result);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the filter for `level` lets through of one INFO line from tantivy and one from
    /// the node.
    fn logged(level: &str) -> String {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = buffer.clone();
            move || Capture(buffer.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::try_new(default_filter(level)).unwrap())
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "tantivy::indexer::segment_updater", "committing segment");
            tracing::warn!(target: "tantivy::directory", "disk nearly full");
            tracing::info!(target: "veche_node::node", "node started");
        });
        String::from_utf8(buffer.lock().unwrap().clone()).unwrap()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_default_filter_keeps_library_chatter_out() {
        let out = logged("info");
        assert!(out.contains("node started"), "{out}");
        assert!(out.contains("disk nearly full"), "{out}");
        assert!(!out.contains("committing segment"), "{out}");
    }

    #[test]
    fn a_level_that_names_a_library_keeps_its_lines() {
        let out = logged("info,tantivy=info");
        assert!(out.contains("committing segment"), "{out}");
        assert_eq!(
            default_filter("debug,tantivy=info")
                .matches("tantivy")
                .count(),
            1
        );
    }

    #[test]
    fn a_quiet_level_stays_quiet() {
        assert_eq!(default_filter("error"), "error");
        let out = logged("error");
        assert!(!out.contains("disk nearly full"), "{out}");
        assert!(!out.contains("node started"), "{out}");
    }
}
