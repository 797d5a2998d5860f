//! FCM HTTP v1 provider against the loopback mock: OAuth2, schema, error paths, token refresh.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use imgate_push::fcm::{AndroidConfig, AndroidPriority, ApnsOverride, FcmMessage};
use imgate_push::mock::FcmReply;
use imgate_push::{FcmClient, PayloadError, PushError, Verdict};
use support::{PROJECT, fcm_config, fcm_pair, no_timers};

#[tokio::test]
async fn notification_and_wake_up_reach_messages_send_with_one_token() {
    let (mock, client) = fcm_pair().await;
    let mut m = FcmMessage::notification("tok-1", "Ann", "hello");
    m.android = Some(AndroidConfig {
        priority: Some(AndroidPriority::High),
        collapse_key: Some("conv-42".into()),
        ttl: Some(Duration::from_secs(3600)),
        ..AndroidConfig::default()
    });
    m.apns = Some(ApnsOverride {
        headers: BTreeMap::from([("apns-priority".to_owned(), "10".to_owned())]),
        payload: None,
    });
    let r = client.send(&m).await.expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    assert!(
        r.name
            .is_some_and(|n| n.starts_with(&format!("projects/{PROJECT}/messages/")))
    );
    let wake = FcmMessage::wake_up(
        "tok-2",
        BTreeMap::from([("conv".to_owned(), "42".to_owned())]),
    );
    assert_eq!(
        client
            .send(&wake)
            .await
            .expect("send")
            .classification
            .verdict,
        Verdict::Delivered
    );

    let recs = mock.requests();
    assert_eq!(recs[0].message["android"]["ttl"], "3600s");
    assert_eq!(recs[0].message["android"]["collapse_key"], "conv-42");
    assert_eq!(recs[0].message["apns"]["headers"]["apns-priority"], "10");
    assert_eq!(recs[1].message["data"]["conv"], "42");
    assert!(
        recs[1].message.get("notification").is_none(),
        "wake-up is data-only"
    );
    assert_eq!(mock.token_requests(), 1, "the access token is cached");
    assert_eq!(client.connections_opened(), 1);
}

#[tokio::test]
async fn error_paths_classify_from_the_real_bodies() {
    let (mock, client) = fcm_pair().await;
    mock.script("gone", [FcmReply::Unregistered]);
    mock.script("malformed", [FcmReply::InvalidToken]);
    mock.script("other-project", [FcmReply::SenderIdMismatch]);
    mock.script("quota", [FcmReply::QuotaExceeded(Some(90))]);
    mock.script("busy", [FcmReply::Unavailable(Some(5))]);
    mock.script("broken", [FcmReply::Internal]);
    let verdict = |t: &'static str| {
        let client = &client;
        async move {
            client
                .send(&FcmMessage::notification(t, "t", "b"))
                .await
                .expect("send")
                .classification
        }
    };
    let c = verdict("gone").await;
    assert_eq!(
        (c.status, c.reason.as_str(), c.verdict),
        (
            404,
            "UNREGISTERED",
            Verdict::Unregistered { since_ms: None }
        )
    );
    assert_eq!(
        verdict("malformed").await.verdict,
        Verdict::Permanent { bad_token: true }
    );
    assert_eq!(
        verdict("other-project").await.verdict,
        Verdict::Permanent { bad_token: true }
    );
    assert_eq!(
        verdict("quota").await.verdict,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(90)),
            min_delay: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(
        verdict("busy").await.verdict,
        Verdict::Retryable {
            retry_after: Some(Duration::from_secs(5)),
            min_delay: None
        }
    );
    assert!(matches!(
        verdict("broken").await.verdict,
        Verdict::Retryable {
            retry_after: None,
            ..
        }
    ));
}

#[tokio::test]
async fn schema_violations_come_back_as_invalid_argument() {
    let (mock, client) = fcm_pair().await;
    let mut m = FcmMessage::notification("tok", "t", "b");
    m.android = Some(AndroidConfig {
        ttl: Some(Duration::from_millis(1500)),
        ..AndroidConfig::default()
    });
    // Fractional seconds are valid protobuf durations.
    assert_eq!(
        client.send(&m).await.expect("send").classification.verdict,
        Verdict::Delivered
    );
    let big = FcmMessage::notification("tok", "t", &"x".repeat(4100));
    assert!(matches!(
        client.send(&big).await,
        Err(PushError::Payload(PayloadError::TooLarge { .. }))
    ));
    assert_eq!(mock.send_count(), 1, "the oversized message never left");
    // A background push through FCM with a badge: APNs would refuse it, so the mock does.
    let mut silent = FcmMessage::wake_up("tok", BTreeMap::new());
    silent.apns = Some(ApnsOverride {
        headers: BTreeMap::from([
            ("apns-push-type".into(), "background".into()),
            ("apns-priority".into(), "5".into()),
        ]),
        payload: Some(imgate_push::apns::ApnsPayload {
            aps: imgate_push::apns::Aps {
                badge: Some(1),
                content_available: Some(1),
                ..Default::default()
            },
            custom: Default::default(),
        }),
    });
    let verdict = client
        .send(&silent)
        .await
        .expect("send")
        .classification
        .verdict;
    assert!(matches!(verdict, Verdict::Permanent { .. }), "{verdict:?}");
}

#[tokio::test]
async fn a_401_refetches_the_access_token_once() {
    let (mock, client) = fcm_pair().await;
    mock.script("tok", [FcmReply::Unauthenticated]);
    let r = client
        .send(&FcmMessage::notification("tok", "t", "b"))
        .await
        .expect("send");
    assert_eq!(r.classification.verdict, Verdict::Delivered);
    assert_eq!(mock.token_requests(), 2);
    assert_eq!(client.token_refreshes(), 2);
}

#[tokio::test(start_paused = true)]
async fn access_token_is_refreshed_before_expires_in() {
    let (mock, _) = fcm_pair().await;
    mock.set_expires_in(600);
    let client = FcmClient::new(&fcm_config(&mock, no_timers())).expect("client");
    let send = |t: &'static str| {
        let client = &client;
        async move {
            client
                .send(&FcmMessage::notification(t, "t", "b"))
                .await
                .expect("send")
                .classification
                .verdict
        }
    };
    assert_eq!(send("a").await, Verdict::Delivered);
    tokio::time::advance(Duration::from_secs(480)).await;
    assert_eq!(send("b").await, Verdict::Delivered);
    assert_eq!(
        mock.token_requests(),
        1,
        "8 min into a 10 min token: reuse it"
    );
    tokio::time::advance(Duration::from_secs(90)).await;
    assert_eq!(send("c").await, Verdict::Delivered);
    assert_eq!(
        mock.token_requests(),
        2,
        "within a minute of expiry: refreshed first"
    );
    assert!(
        mock.requests().iter().all(|r| r.status == 200),
        "no request ever carried an expired token"
    );
}

#[tokio::test]
async fn a_burst_shares_one_connection_and_one_token() {
    let (mock, client) = fcm_pair().await;
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..500 {
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            client
                .send(&FcmMessage::notification(format!("tok-{n}"), "t", "b"))
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(
            r.expect("join").expect("send").classification.verdict,
            Verdict::Delivered
        );
    }
    assert_eq!(mock.token_requests(), 1);
    assert_eq!(client.connections_opened(), 1);
    assert_eq!(mock.send_count(), 500);
}
