//! The console's and the demo page's static files, embedded in the binary: plain HTML, CSS
//! and ES modules, no build step but the SDK bundle (`demo/imgate-client.js`, written by
//! `npm run bundle` in `sdk/typescript` and checked there to be current).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::routes::Reply;

/// A page's files: (name under its prefix, content type, body). The page itself is "".
type Files = [(&'static str, &'static str, &'static str)];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const CONSOLE: &Files = &[
    ("", HTML, include_str!("console/index.html")),
    ("console.js", JS, include_str!("console/console.js")),
    ("console.css", CSS, include_str!("console/console.css")),
];

const DEMO: &Files = &[
    ("", HTML, include_str!("demo/index.html")),
    ("demo.js", JS, include_str!("demo/demo.js")),
    ("demo.css", CSS, include_str!("demo/demo.css")),
    (
        "imgate-client.js",
        JS,
        include_str!("demo/imgate-client.js"),
    ),
];

/// Only this origin's scripts; the console talks to its own origin, the demo also to the
/// gateway's WebSocket and HTTP-fallback listeners (other ports, so other origins).
const CONSOLE_POLICY: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                              form-action 'none'";
const DEMO_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss: http: https:; \
                           frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/console/{file}`.
pub(super) fn console(file: &str) -> Option<Reply> {
    serve(CONSOLE, file, CONSOLE_POLICY)
}

/// `/demo/{file}`.
pub(super) fn demo(file: &str) -> Option<Reply> {
    serve(DEMO, file, DEMO_POLICY)
}

fn serve(files: &Files, file: &str, policy: &'static str) -> Option<Reply> {
    let (_, content_type, body) = files.iter().find(|(name, _, _)| *name == file)?;
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = StatusCode::OK;
    let headers = reply.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary, not while it runs; revalidating is cheap on loopback.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    Some(reply)
}
