//! APNs provider against the loopback mock: headers, error paths, JWT lifetime, connection reuse.

mod support;

use std::sync::Arc;
use std::time::Duration;

use imgate_push::apns::{ApnsNotification, PushType};
use imgate_push::mock::{ApnsReply, ApnsTestKey, MockApns, MockApnsAuth, MockApnsConfig};
use imgate_push::{ApnsClient, ApnsConfig, PayloadError, PushError, Verdict};
use support::{TOPIC, apns_config, apns_pair, device, no_timers};

#[tokio::test]
async fn alert_carries_every_header_and_the_badge() {
    let (mock, client, key) = apns_pair().await;
    let mut n = ApnsNotification::alert(device(1), TOPIC, "Ann", "hello");
    n.payload.aps.badge = Some(4);
    n.expiration = Some(1_900_000_000);
    n.collapse_id = Some("conv-42".into());
    n.apns_id = Some("123e4567-e89b-12d3-a456-426614174000".into());
    let r = client.send(&n).await.expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    assert_eq!(
        r.apns_id.as_deref(),
        Some("123e4567-e89b-12d3-a456-426614174000")
    );

    let rec = &mock.requests()[0];
    let h = |name| {
        rec.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(h("authorization").starts_with("bearer "));
    assert_eq!(h("apns-topic"), TOPIC);
    assert_eq!(h("apns-push-type"), "alert");
    assert_eq!(h("apns-priority"), "10");
    assert_eq!(h("apns-expiration"), "1900000000");
    assert_eq!(h("apns-collapse-id"), "conv-42");
    let body: serde_json::Value = serde_json::from_slice(&rec.body).expect("json");
    assert_eq!(body["aps"]["badge"], 4);
    assert_eq!(body["aps"]["alert"]["body"], "hello");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    drop(key);
}

#[tokio::test]
async fn wake_up_is_background_priority_5_content_available() {
    let (mock, client, _key) = apns_pair().await;
    let r = client
        .send(&ApnsNotification::wake_up(device(2), TOPIC))
        .await
        .expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    let rec = &mock.requests()[0];
    assert_eq!(rec.headers["apns-push-type"], "background");
    assert_eq!(rec.headers["apns-priority"], "5");
    let body: serde_json::Value = serde_json::from_slice(&rec.body).expect("json");
    assert_eq!(body, serde_json::json!({"aps": {"content-available": 1}}));
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
}

#[tokio::test]
async fn error_paths_classify_from_the_real_bodies() {
    let (mock, client, _key) = apns_pair().await;
    mock.script(
        &device(10),
        [ApnsReply::Unregistered {
            timestamp_ms: 1_700_000_000_000,
        }],
    );
    mock.script(&device(11), [ApnsReply::BadDeviceToken]);
    mock.script(&device(12), [ApnsReply::TooManyRequests(Some(7))]);
    mock.script(&device(13), [ApnsReply::ServiceUnavailable(Some(3))]);
    let send = |n| {
        let client = &client;
        async move {
            client
                .send(&ApnsNotification::alert(device(n), TOPIC, "t", "b"))
                .await
                .expect("send")
                .classification
        }
    };
    let c = send(10).await;
    assert_eq!(
        (c.status, c.verdict),
        (
            410,
            Verdict::Unregistered {
                since_ms: Some(1_700_000_000_000)
            }
        )
    );
    let c = send(11).await;
    assert_eq!(
        (c.status, c.reason.as_str(), c.verdict),
        (
            400,
            "BadDeviceToken",
            Verdict::Permanent { bad_token: true }
        )
    );
    let c = send(12).await;
    assert_eq!(
        c.verdict,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(7)),
            min_delay: None
        }
    );
    let c = send(13).await;
    assert_eq!(
        (c.status, c.verdict),
        (
            503,
            Verdict::Retryable {
                retry_after: Some(Duration::from_secs(3)),
                min_delay: None
            }
        )
    );
    // Scripts are used up: the next push to each token is delivered.
    assert_eq!(send(12).await.verdict, Verdict::Delivered);
}

#[tokio::test]
async fn expired_provider_token_is_reminted_once() {
    let (mock, client, _key) = apns_pair().await;
    mock.script(&device(20), [ApnsReply::ExpiredProviderToken]);
    let r = client
        .send(&ApnsNotification::alert(device(20), TOPIC, "t", "b"))
        .await
        .expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    assert_eq!(client.token_refreshes(), 2);
    let recs = mock.requests();
    assert_eq!(recs.len(), 2);
    assert_ne!(
        recs[0].headers["authorization"],
        recs[1].headers["authorization"]
    );

    // Rejected twice in a row: only one re-mint, then the verdict goes back to the caller.
    mock.script(
        &device(21),
        [
            ApnsReply::ExpiredProviderToken,
            ApnsReply::ExpiredProviderToken,
        ],
    );
    let r = client
        .send(&ApnsNotification::alert(device(21), TOPIC, "t", "b"))
        .await
        .expect("send");
    assert_eq!(r.classification.verdict, Verdict::RefreshAuth);
    assert_eq!(mock.request_count(), 4);
}

#[tokio::test]
async fn oversized_payload_and_long_collapse_id_are_refused_before_sending() {
    let (mock, client, _key) = apns_pair().await;
    let big = ApnsNotification::alert(device(30), TOPIC, "t", &"x".repeat(4100));
    assert!(matches!(
        client.send(&big).await,
        Err(PushError::Payload(PayloadError::TooLarge {
            limit: 4096,
            ..
        }))
    ));
    let mut voip = big.clone();
    voip.push_type = PushType::Voip;
    voip.topic = format!("{TOPIC}.voip");
    assert_eq!(
        client
            .send(&voip)
            .await
            .expect("5 KiB VoIP fits")
            .classification
            .verdict,
        Verdict::Delivered
    );
    let mut long = ApnsNotification::alert(device(31), TOPIC, "t", "b");
    long.collapse_id = Some("c".repeat(65));
    assert!(matches!(
        client.send(&long).await,
        Err(PushError::Payload(PayloadError::CollapseIdTooLong(65)))
    ));
    assert_eq!(
        mock.request_count(),
        1,
        "only the VoIP push reached the server"
    );
}

#[tokio::test]
async fn a_burst_of_1000_pushes_uses_one_http2_connection() {
    let (mock, client, _key) = apns_pair().await;
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..1000u64 {
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            client
                .send(&ApnsNotification::alert(device(n), TOPIC, "t", "b"))
                .await
        });
    }
    let mut delivered = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("join").expect("send").classification.verdict == Verdict::Delivered {
            delivered += 1;
        }
    }
    assert_eq!(delivered, 1000);
    assert_eq!(mock.connections(), 1);
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(client.token_refreshes(), 1, "one JWT for the whole burst");
}

#[tokio::test(start_paused = true)]
async fn jwt_is_reminted_after_the_refresh_window_not_before() {
    let (mock, client, _key) = apns_pair().await;
    let send = |n| {
        let client = &client;
        async move {
            client
                .send(&ApnsNotification::alert(device(n), TOPIC, "t", "b"))
                .await
        }
    };
    assert_eq!(
        send(1).await.expect("send").classification.verdict,
        Verdict::Delivered
    );
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    assert_eq!(
        send(2).await.expect("send").classification.verdict,
        Verdict::Delivered
    );
    assert_eq!(
        client.token_refreshes(),
        1,
        "30 min old: still valid, and re-minting would be throttled"
    );
    tokio::time::advance(Duration::from_secs(21 * 60)).await;
    assert_eq!(
        send(3).await.expect("send").classification.verdict,
        Verdict::Delivered
    );
    assert_eq!(client.token_refreshes(), 2, "51 min old: re-minted");
    let auth: Vec<_> = mock
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(auth[0], auth[1]);
    assert_ne!(auth[1], auth[2]);
}

#[tokio::test(start_paused = true)]
async fn a_token_older_than_an_hour_is_rejected_then_reminted() {
    let key = ApnsTestKey::generate().expect("key");
    let mock = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let mut config = apns_config(&mock, &key, no_timers());
    config.token_refresh = Duration::from_secs(3 * 3600); // misconfigured: too long
    let client = ApnsClient::new(&config).expect("client");
    let send = |n| {
        let client = &client;
        async move {
            client
                .send(&ApnsNotification::alert(device(n), TOPIC, "t", "b"))
                .await
        }
    };
    send(1).await.expect("send");
    tokio::time::advance(Duration::from_secs(61 * 60)).await;
    assert_eq!(
        send(2).await.expect("send").classification.verdict,
        Verdict::Delivered
    );
    let recs = mock.requests();
    assert_eq!(
        recs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 403, 200]
    );
    assert_eq!(recs[1].reason.as_deref(), Some("ExpiredProviderToken"));
}

#[tokio::test]
async fn certificate_auth_sends_no_authorization_header() {
    let mock = MockApns::start(MockApnsConfig {
        auth: MockApnsAuth::Certificate,
        bundle_id: Some(TOPIC.into()),
        enforce_token_update_rate: true,
        record: true,
    })
    .await
    .expect("mock");
    let (chain, key) = mock
        .pki()
        .client_identity("Apple Push Services: com.example.chat")
        .expect("identity");
    let mut config = ApnsConfig::certificate(chain, key);
    config.base_url(mock.url()).trust_pem(mock.ca_pem());
    let client = ApnsClient::new(&config).expect("client");
    let r = client
        .send(&ApnsNotification::alert(device(5), TOPIC, "t", "b"))
        .await
        .expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    assert!(!mock.requests()[0].headers.contains_key("authorization"));

    // The wrong topic for this certificate's app.
    let r = client
        .send(&ApnsNotification::alert(device(5), "com.other", "t", "b"))
        .await
        .expect("send");
    assert_eq!(r.classification.reason, "DeviceTokenNotForTopic");
}

#[tokio::test]
async fn reconnects_after_the_connection_dies() {
    let key = ApnsTestKey::generate().expect("key");
    let first = MockApns::start(MockApnsConfig::token(&key))
        .await
        .expect("mock");
    let port = first
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    let pki = Arc::clone(first.pki());
    let client = ApnsClient::new(&apns_config(&first, &key, no_timers())).expect("client");
    let n = ApnsNotification::alert(device(7), TOPIC, "t", "b");
    client.send(&n).await.expect("send");
    first.shutdown();
    // The dead connection is noticed and the next request dials again.
    let second = MockApns::start_on(MockApnsConfig::token(&key), pki, port)
        .await
        .expect("rebind");
    let mut delivered = false;
    for _ in 0..3 {
        if let Ok(r) = client.send(&n).await {
            delivered = r.classification.verdict == Verdict::Delivered;
            break;
        }
    }
    assert!(delivered);
    assert_eq!(client.connections_opened(), 2);
    assert_eq!(second.connections(), 1);
}
