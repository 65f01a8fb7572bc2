//! The operators' web page: the hand-written HTML, CSS and ES modules under `controller/ui/`,
//! embedded in the binary at build time through one table and served at `/` and
//! `/assets/...` with their content types, revalidation caching (ETag) and a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline code).
//!
//! This module serves files; it must not read the disk at run time, reach the network, or
//! touch the API's state: the page talks to `/api/v1` like any other client.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY as CSP_HEADER, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The Content-Security-Policy sent with every file of the page: everything from this origin
/// only, no inline script or style, no plugins, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file, by its path under `controller/ui/`.
struct Asset {
    path: &'static str,
    body: &'static [u8],
}

/// Embeds `controller/ui/$path` under that path.
macro_rules! asset {
    ($path:literal) => {
        Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
        }
    };
}

/// Every file of the page. A test checks that this table and `controller/ui/` agree.
const ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("assets/app.css"),
    asset!("assets/icon.svg"),
    asset!("assets/app.js"),
    asset!("assets/api.js"),
    asset!("assets/dom.js"),
    asset!("assets/chart.js"),
    asset!("assets/diff.js"),
    asset!("assets/pages/overview.js"),
    asset!("assets/pages/runs.js"),
    asset!("assets/pages/resources.js"),
    asset!("assets/pages/devices.js"),
    asset!("assets/pages/alerts.js"),
    asset!("assets/pages/audit.js"),
];

/// The content type of an embedded file, from its extension; `None` for an extension the
/// page does not use (a test keeps every embedded file on this list).
pub fn content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit_once('.').map(|(_, ext)| ext)?;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        _ => return None,
    })
}

/// The paths of the embedded files (relative to `controller/ui/`), in table order.
pub fn embedded_paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// The page's routes: `GET /` (the HTML shell) and `GET /assets/{*path}`, registered like
/// the API's own (so they appear in `/openapi.json` under the `web` tag). Generic over the
/// router state so that the API's `routes()` merges them in one line and tests can serve
/// them without a store.
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(asset))
}

/// The web page for operators (an HTML shell that loads `/assets/app.js`).
#[utoipa::path(get, path = "/", tag = "web",
    responses(
        (status = 200, description = "the web page", content_type = "text/html"),
        (status = 304, description = "unchanged since the ETag sent in If-None-Match")))]
async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// A file of the web page (script, style sheet, icon).
#[utoipa::path(get, path = "/assets/{*path}", tag = "web",
    params(("path" = String, Path, description = "the file under assets/")),
    responses(
        (status = 200, description = "the file, with its content type"),
        (status = 304, description = "unchanged since the ETag sent in If-None-Match"),
        (status = 404, description = "no such file")))]
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{path}"), &headers)
}

fn serve(path: &str, request: &HeaderMap) -> Response {
    let found = ASSETS
        .iter()
        .find(|a| a.path == path)
        .and_then(|a| content_type(a.path).map(|ct| (a, ct)));
    let Some((asset, content_type)) = found else {
        return with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not found",
            )
                .into_response(),
        );
    };
    let etag = etag(asset.body);
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    // File names carry no content hash, so browsers must revalidate; the ETag makes that a
    // 304 without a body.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_security_headers(response)
}

fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CSP_HEADER,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn files_under(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut BTreeSet<String>,
    ) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                files_under(root, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }

    #[test]
    fn every_file_under_controller_ui_should_be_embedded_and_nothing_else() -> std::io::Result<()> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut on_disk = BTreeSet::new();
        files_under(&root, &root, &mut on_disk)?;
        let embedded: BTreeSet<String> = embedded_paths().map(str::to_owned).collect();
        assert_eq!(on_disk, embedded);
        Ok(())
    }

    #[test]
    fn every_embedded_file_should_have_a_known_content_type() {
        for path in embedded_paths() {
            assert!(content_type(path).is_some(), "{path}");
        }
    }

    #[test]
    fn the_policy_should_forbid_inline_script_and_framing() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
        assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    }
}
