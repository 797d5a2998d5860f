//! The admin API speaks one error format (JSON `{"error": …}`) and says which method a known
//! path takes (405 with `Allow`), instead of plain text and 404 for everything.

mod support;

use imgate::admin::{AdminConfig, AdminServer};
use prometheus_client::registry::Registry;
use support::{http, loopback, raw, start};

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_errors_are_json() {
    let gw = start().await;
    let admin = AdminServer::start(
        AdminConfig {
            bind: loopback(),
            token: None,
            demo: None,
        },
        gw.handle().clone(),
        Registry::default(),
    )
    .await
    .expect("admin");
    let addr = admin.local_addr();

    let response = raw(
        addr,
        "GET /v1/deliver HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("\r\nallow: post\r\n"), "{response}");
    assert!(
        lower.contains("content-type: application/json"),
        "{response}"
    );

    let (status, body) = http(addr, "POST", "/v1/sessions/00000000000000ff", "").await;
    assert_eq!(status, 405);
    assert!(body.contains("DELETE"), "{body}");

    for (method, path, expected) in [
        ("GET", "/v1/nothing", 404),
        ("DELETE", "/v1/sessions/not-hex", 400),
        ("DELETE", "/v1/sessions/00000000000000ff", 404),
        ("POST", "/v1/deliver", 400),
    ] {
        let (status, body) = http(addr, method, path, "{}").await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        let error: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
        assert!(
            error["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: {body}"
        );
    }
    gw.shutdown().await;
}
