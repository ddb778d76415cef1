//! The web client, served by the gateway from the binary itself: the files of `web/dist`
//! (built by Vite and committed, so that building and running the node needs no Node.js) are
//! embedded at compile time. No CDN, nothing fetched at run time: it works on an air-gapped
//! LAN.
//!
//! Paths without a file extension are routes of the client and get its page; `/assets/` holds
//! files named by their content's hash, cached for good; everything else is revalidated. Each
//! text file has Brotli and gzip copies made by the build, chosen by `Accept-Encoding`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// The built client.
#[derive(RustEmbed)]
#[folder = "$CARGO_MANIFEST_DIR/../web/dist"]
#[exclude = ".source-hash"]
struct Dist;

/// What the pages may load and run: the node's own files only, nothing inline, no `eval`,
/// and no other site may frame them.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How long content-hashed assets are kept by browsers: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Answers a request for a path outside `/api/`.
pub(crate) async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let last = path.rsplit('/').next().unwrap_or_default();
    // A route of the client (`/`, `/d/…`) is its page.
    let file = if last.contains('.') {
        path
    } else {
        "index.html"
    };
    // Dot files (the build's `.source-hash`) and odd paths are nobody's business.
    if file.split('/').any(|s| s.is_empty() || s.starts_with('.')) {
        return not_found();
    }
    // The widget's page is served at its own paths only, framed by its application's origins.
    if file == EMBED_PAGE {
        return not_found();
    }
    serve_file(&method, &headers, file, CSP)
}

/// The widget's page, built from `web/embed.html`.
const EMBED_PAGE: &str = "embed.html";

/// Answers a request for the widget's page (`/embed/object/{app}/{type}/{id}`): the
/// client's policy, except that the pages of `origins` may frame it.
pub(crate) fn serve_embed(method: Method, headers: HeaderMap, origins: &[String]) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    serve_file(&method, &headers, EMBED_PAGE, &embed_csp(origins))
}

/// The widget page's policy: `origins` are serialized origins (`scheme://host[:port]`,
/// checked when an administrator allowed them), so they cannot add directives.
fn embed_csp(origins: &[String]) -> String {
    let ancestors = if origins.is_empty() {
        "'none'".to_owned()
    } else {
        origins.join(" ")
    };
    format!(
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    )
}

fn serve_file(method: &Method, headers: &HeaderMap, file: &str, csp: &str) -> Response {
    let Some(original) = Dist::get(file) else {
        return not_found();
    };
    let (data, hash, encoding) =
        match preferred_encoding(headers)
            .into_iter()
            .find_map(|(encoding, ext)| {
                Dist::get(&format!("{file}.{ext}")).map(|copy| (copy, encoding))
            }) {
            Some((copy, encoding)) => (copy.data, copy.metadata.sha256_hash(), Some(encoding)),
            None => (original.data, original.metadata.sha256_hash(), None),
        };
    let etag = format!("\"{}\"", hex::encode(&hash[..16]));
    let mut out = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, &content_type(file));
    set(
        header::CACHE_CONTROL,
        if file.starts_with("assets/") {
            IMMUTABLE
        } else {
            "no-cache"
        },
    );
    set(header::ETAG, &etag);
    set(header::VARY, "Accept-Encoding");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    if file.ends_with(".html") {
        set(header::CONTENT_SECURITY_POLICY, csp);
    }
    if let Some(encoding) = encoding {
        set(header::CONTENT_ENCODING, encoding);
    }
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    if *method == Method::HEAD {
        return (StatusCode::OK, out).into_response();
    }
    (StatusCode::OK, out, Body::from(data.into_owned())).into_response()
}

pub(crate) fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found",
    )
        .into_response()
}

/// The compressed copies the client accepts, best first: `(Content-Encoding, extension)`.
fn preferred_encoding(headers: &HeaderMap) -> Vec<(&'static str, &'static str)> {
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (!refused).then_some(name)
        })
        .collect();
    [("br", "br"), ("gzip", "gz")]
        .into_iter()
        .filter(|(encoding, _)| accepted.iter().any(|a| a == encoding))
        .collect()
}

fn content_type(file: &str) -> String {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    match mime.type_() {
        mime_guess::mime::TEXT | mime_guess::mime::APPLICATION
            if matches!(
                mime.subtype().as_str(),
                "html" | "css" | "javascript" | "json"
            ) =>
        {
            format!("{mime}; charset=utf-8")
        }
        _ => mime.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use sha2::{Digest, Sha256};

    /// The build's inputs, as `web/scripts/source-hash.mjs` names them.
    fn inputs(web: &Path) -> Vec<(String, PathBuf)> {
        fn walk(dir: &Path, web: &Path, out: &mut Vec<(String, PathBuf)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Symbolic links are neither followed nor counted, as in the script.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    walk(&path, web, out);
                } else if kind.is_file()
                    && let Ok(relative) = path.strip_prefix(web)
                {
                    let name = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    out.push((name, path));
                }
            }
        }
        let mut files = Vec::new();
        for folder in ["src", "public", "scripts"] {
            walk(&web.join(folder), web, &mut files);
        }
        for name in [
            "index.html",
            "embed.html",
            "package.json",
            "package-lock.json",
            "vite.config.ts",
            "tsconfig.json",
        ] {
            if web.join(name).is_file() {
                files.push((name.to_owned(), web.join(name)));
            }
        }
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        files
    }

    /// `cargo test` fails when `web/dist` was not rebuilt after a change to its sources: the
    /// binary would serve a client that is not the one in the tree.
    #[test]
    fn the_embedded_web_client_is_built_from_the_sources_in_the_tree() {
        let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut hash = Sha256::new();
        for (name, path) in inputs(&web) {
            let bytes = std::fs::read(&path).expect("readable input");
            hash.update(name.as_bytes());
            hash.update(b"\n");
            hash.update(bytes.len().to_string().as_bytes());
            hash.update(b"\n");
            hash.update(&bytes);
        }
        let now = hex::encode(hash.finalize());
        let built = std::fs::read_to_string(web.join("dist/.source-hash")).unwrap_or_default();
        assert_eq!(
            built.trim(),
            now,
            "web/dist is stale: run `npm ci && npm run build` in web/ and commit web/dist"
        );
    }

    #[test]
    fn the_client_asks_for_nothing_outside_the_node() {
        for page in ["index.html", super::EMBED_PAGE] {
            let index = super::Dist::get(page).expect("the page is embedded");
            let text = String::from_utf8_lossy(&index.data);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{text}"
            );
            assert!(!text.contains("<script>"), "no inline scripts: {text}");
        }
    }

    #[test]
    fn the_widget_page_is_framed_only_by_its_applications_origins() {
        let csp = super::embed_csp(&[
            "https://erp.corp.example".into(),
            "http://localhost:5173".into(),
        ]);
        assert!(
            csp.ends_with("frame-ancestors https://erp.corp.example http://localhost:5173"),
            "{csp}"
        );
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(super::embed_csp(&[]).ends_with("frame-ancestors 'none'"));
    }
}
