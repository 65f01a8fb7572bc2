//! The web page's files as the server sends them (no browser needed): every asset that
//! `index.html` references, and every module those scripts import, is embedded and served
//! with the right content type, caching and security headers.
//!
//! These tests only read the page's router; they must not depend on the API being there.

use std::collections::{BTreeSet, VecDeque};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use mycopod::api::ui;

struct Fetched {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn fetch(app: &Router, path: &str, etag: Option<&str>) -> Result<Fetched> {
    let mut request = Request::builder().uri(path);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty())?)
        .await
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 4 << 20)
        .await
        .with_context(|| format!("read the body of {path}"))?;
    Ok(Fetched {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The values of `attr="..."` in an HTML text.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// The specifiers of the static `import ... from "..."` statements of an ES module.
fn imports(module: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for line in module.lines() {
        let line = line.trim();
        if !line.starts_with("import ") && !line.starts_with("} from ") {
            continue;
        }
        if let Some(from) = line.rfind(" from \"").map(|i| &line[i + 7..]) {
            if let Some(end) = from.find('"') {
                out.push(&from[..end]);
            }
        } else if let Some(rest) = line.strip_prefix("import \"")
            && let Some(end) = rest.find('"')
        {
            out.push(&rest[..end]);
        }
    }
    out
}

/// `spec` relative to the module at `base` (both URL paths).
fn resolve(base: &str, spec: &str) -> Result<String> {
    if spec.starts_with('/') {
        return Ok(spec.to_owned());
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for piece in spec.split('/') {
        match piece {
            "." => {}
            ".." => {
                if parts.len() <= 1 {
                    bail!("{spec} from {base} leaves the site");
                }
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") | None => "text/html; charset=utf-8",
        Some(other) => panic!("the page references an unexpected kind of file: .{other}"),
    }
}

#[tokio::test]
async fn every_asset_the_page_references_should_be_embedded_and_served_with_its_type() -> Result<()>
{
    let app: Router = ui::routes().into();
    let index = fetch(&app, "/", None).await?;
    assert_eq!(index.status, StatusCode::OK);
    assert_eq!(
        index
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"text/html; charset=utf-8"[..])
    );

    let mut queue: VecDeque<String> = attribute_values(&index.body, "src")
        .into_iter()
        .chain(attribute_values(&index.body, "href"))
        .filter(|v| v.starts_with('/'))
        .map(str::to_owned)
        .collect();
    assert!(
        queue.iter().any(|p| p.ends_with(".js")) && queue.iter().any(|p| p.ends_with(".css")),
        "index.html references its script and style sheet: {queue:?}"
    );

    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let got = fetch(&app, &path, None).await?;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert!(!got.body.is_empty(), "{path} is empty");
        let content_type = got
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(content_type, expected_type(&path), "{path}");
        if path.ends_with(".js") {
            for spec in imports(&got.body) {
                queue.push_back(resolve(&path, spec)?);
            }
        }
    }

    // Every embedded file is reachable from the page: nothing dead is shipped.
    let embedded: BTreeSet<String> = ui::embedded_paths()
        .filter(|p| *p != "index.html")
        .map(|p| format!("/{p}"))
        .collect();
    assert_eq!(seen, embedded);
    Ok(())
}

#[tokio::test]
async fn every_response_should_carry_the_content_security_policy() -> Result<()> {
    let app: Router = ui::routes().into();
    for path in [
        "/",
        "/assets/app.js",
        "/assets/app.css",
        "/assets/missing.js",
    ] {
        let got = fetch(&app, path, None).await?;
        let csp = got
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("no Content-Security-Policy on {path}"))?;
        assert_eq!(csp, ui::CONTENT_SECURITY_POLICY, "{path}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            got.headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_page_should_have_no_inline_script_or_style() -> Result<()> {
    let app: Router = ui::routes().into();
    let index = fetch(&app, "/", None).await?;
    let html = index.body.to_lowercase();
    assert!(
        !html.contains("<script>"),
        "an inline script would be blocked by the CSP"
    );
    for script in html.split("<script").skip(1) {
        assert!(
            script.contains("src="),
            "inline script in index.html: {script}"
        );
    }
    assert!(!html.contains("<style"), "inline style block in index.html");
    assert!(
        !html.contains(" style=\""),
        "inline style attribute in index.html"
    );
    assert!(
        !html.contains(" onclick="),
        "inline event handler in index.html"
    );
    Ok(())
}

#[tokio::test]
async fn an_unchanged_asset_should_be_answered_with_not_modified() -> Result<()> {
    let app: Router = ui::routes().into();
    let first = fetch(&app, "/assets/app.js", None).await?;
    assert_eq!(
        first
            .headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.as_bytes()),
        Some(&b"no-cache"[..])
    );
    let etag = first
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .context("no ETag on app.js")?
        .to_owned();
    let again = fetch(&app, "/assets/app.js", Some(&etag)).await?;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let other = fetch(&app, "/assets/app.js", Some("\"something-else\"")).await?;
    assert_eq!(other.status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn paths_outside_the_embedded_files_should_be_not_found() -> Result<()> {
    let app: Router = ui::routes().into();
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/src/lib.rs",
        "/assets/",
    ] {
        let got = fetch(&app, path, None).await?;
        assert_eq!(got.status, StatusCode::NOT_FOUND, "{path}");
    }
    Ok(())
}
