//! The dashboard at `/ui`: static assets compiled into the binary (`src/ui/`: the page, its
//! stylesheet, a hand-written JS module and the vendored Chart.js with its licence). The page
//! calls the public REST API with the user's token like any client; this module only serves
//! files.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// Every asset: path under `/ui/`, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 5] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/app.css"),
    ),
    (
        "vendor/chart.umd.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/chart.umd.min.js"),
    ),
    (
        "vendor/chart.js-LICENSE.md",
        "text/plain; charset=utf-8",
        include_bytes!("../ui/vendor/chart.js-LICENSE.md"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/index.html"),
    ),
];

/// What the page may load and where it may connect: only this server.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /ui`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /ui/{*asset}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == path) else {
        return Error::NotFound(format!(
            "no dashboard asset /ui/{}",
            crate::error::quote(path)
        ))
        .into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
