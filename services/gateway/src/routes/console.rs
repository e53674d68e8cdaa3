//! The web console: a client of this API for people in a browser, served by the gateway from
//! files compiled into the binary (`services/gateway/console`, plain ES modules, no build
//! step). `/` is its page; its scripts and styles are under `/console/`. It runs under a strict
//! Content-Security-Policy (see `edge::CONSOLE_CSP`): nothing inline, nothing from elsewhere.

use crate::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "console/"]
struct Assets;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{*path}", get(asset))
}

/// Whether a path is the console's (it gets the console's CSP instead of the API's).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    if path == "index.html" {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve(&path, &headers)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// One embedded file, revalidated by its content hash (`ETag`): a new build's files are seen
/// at once, unchanged ones cost a 304.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = HeaderValue::from_static("no-cache");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, "no-cache".into()),
            ],
        )
            .into_response();
    }
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        )],
        file.data.into_owned(),
    )
        .into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, cache);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_console_file_is_embedded_with_a_known_type() {
        let names: Vec<String> = Assets::iter().map(|p| p.into_owned()).collect();
        assert!(names.contains(&"index.html".to_owned()), "{names:?}");
        assert!(names.contains(&"js/app.js".to_owned()), "{names:?}");
        for name in &names {
            assert_ne!(
                content_type(name),
                "application/octet-stream",
                "{name} would be served without a type"
            );
        }
    }

    #[test]
    fn the_page_loads_nothing_inline() {
        // The CSP forbids inline scripts and styles: the page must not rely on them.
        let page = String::from_utf8(Assets::get("index.html").unwrap().data.into_owned()).unwrap();
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "inline style attribute");
        assert!(!page.contains(" on"), "inline event handler");
        for name in Assets::iter() {
            let text = String::from_utf8_lossy(&Assets::get(&name).unwrap().data)
                .replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("innerHTML"),
                "{name} writes markup from strings"
            );
            assert!(!text.contains("http://"), "{name} loads from elsewhere");
            assert!(!text.contains("https://"), "{name} loads from elsewhere");
        }
    }
}
