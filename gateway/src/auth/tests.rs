//! Tests of the authenticators. RSA and EC keys are generated at test time (pure Rust);
//! no private key is committed.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use imgate_codec::CloseCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::*;
use crate::ids::{AppId, DeviceId, UserId};

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-only";

#[derive(Serialize, Default)]
struct TestClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json_free::Aud>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
}

/// `aud` as a string or an array, without pulling serde_json into the crate.
mod serde_json_free {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    pub(super) enum Aud {
        One(String),
        Many(Vec<String>),
    }
}
use serde_json_free::Aud;

/// Claims that pass every check for `request()` at `NOW`.
fn good_claims() -> TestClaims {
    TestClaims {
        sub: Some("alice".into()),
        app_id: Some("chat".into()),
        exp: Some(NOW + 3600),
        ..TestClaims::default()
    }
}

fn request(token: impl Into<String>) -> AuthRequest {
    AuthRequest {
        app: AppId::from("chat"),
        device: DeviceId::from("phone-1"),
        token: token.into(),
        peer: None,
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &TestClaims) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("test token signs")
}

fn hs256(claims: &TestClaims) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn hs_auth() -> JwtAuthenticator {
    JwtAuthenticator::new(JwtConfig::hs256(SECRET)).expect("valid config")
}

/// (private PKCS#1 PEM, public SPKI PEM), generated once per test binary because RSA key
/// generation is slow in debug builds.
fn rsa_keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen");
        let public = rsa::RsaPublicKey::from(&private);
        (
            private
                .to_pkcs1_pem(LineEnding::LF)
                .expect("PEM")
                .to_string(),
            public.to_public_key_pem(LineEnding::LF).expect("PEM"),
        )
    })
}

/// (private PKCS#8 PEM, public SPKI PEM) of a fresh P-256 key.
fn ec_keys() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC keygen");
    (pair.serialize_pem(), pair.public_key_pem())
}

#[track_caller]
fn assert_refused(result: Result<Authenticated, AuthError>, code: CloseCode) -> AuthError {
    let error = result.expect_err("token must be refused");
    assert_eq!(error.close_code(), code, "{error}");
    error
}

#[test]
fn hs256_valid_token() {
    let auth = hs_auth();
    let ok = auth
        .verify(&request(hs256(&good_claims())), NOW)
        .expect("valid");
    assert_eq!(
        ok,
        Authenticated {
            user: UserId::from("alice"),
            expires_at: Some(NOW + 3600)
        }
    );
}

#[test]
fn rs256_valid_token() {
    let (private, public) = rsa_keys();
    let auth = JwtAuthenticator::new(JwtConfig::rs256(public.clone())).expect("valid config");
    let key = EncodingKey::from_rsa_pem(private.as_bytes()).expect("key");
    let token = sign(Algorithm::RS256, &key, &good_claims());
    assert_eq!(
        auth.verify(&request(token), NOW)
            .expect("valid")
            .user
            .as_str(),
        "alice"
    );
}

#[test]
fn es256_valid_token() {
    let (private, public) = ec_keys();
    let auth = JwtAuthenticator::new(JwtConfig::es256(public)).expect("valid config");
    let key = EncodingKey::from_ec_pem(private.as_bytes()).expect("key");
    let token = sign(Algorithm::ES256, &key, &good_claims());
    assert_eq!(
        auth.verify(&request(token), NOW)
            .expect("valid")
            .user
            .as_str(),
        "alice"
    );

    // Another EC key's signature does not verify.
    let (other, _) = ec_keys();
    let other = EncodingKey::from_ec_pem(other.as_bytes()).expect("key");
    let forged = sign(Algorithm::ES256, &other, &good_claims());
    assert_refused(
        auth.verify(&request(forged), NOW),
        CloseCode::UNAUTHENTICATED,
    );
}

#[test]
fn expired_token_is_token_expired_after_leeway() {
    let mut config = JwtConfig::hs256(SECRET);
    config.leeway_secs = 10;
    let auth = JwtAuthenticator::new(config).expect("valid config");
    let token = hs256(&TestClaims {
        exp: Some(NOW),
        ..good_claims()
    });
    assert!(auth.verify(&request(token.clone()), NOW + 9).is_ok());
    let error = assert_refused(
        auth.verify(&request(token), NOW + 10),
        CloseCode::TOKEN_EXPIRED,
    );
    assert_eq!(error, AuthError::Expired { expired_at: NOW });
}

#[test]
fn future_nbf_is_token_expired() {
    let auth = hs_auth();
    let token = hs256(&TestClaims {
        nbf: Some(NOW + DEFAULT_LEEWAY_SECS + 1),
        ..good_claims()
    });
    assert_refused(auth.verify(&request(token), NOW), CloseCode::TOKEN_EXPIRED);
    let within_leeway = hs256(&TestClaims {
        nbf: Some(NOW + DEFAULT_LEEWAY_SECS),
        ..good_claims()
    });
    assert!(auth.verify(&request(within_leeway), NOW).is_ok());
}

#[test]
fn bad_signature_is_unauthenticated() {
    let auth = hs_auth();
    let other = EncodingKey::from_secret(b"another secret of at least 32 bytes!!");
    let token = sign(Algorithm::HS256, &other, &good_claims());
    let error = assert_refused(
        auth.verify(&request(token), NOW),
        CloseCode::UNAUTHENTICATED,
    );
    assert_eq!(error, AuthError::BadSignature);

    // Swapping in other claims under the original signature is caught too.
    let genuine = hs256(&good_claims());
    let bob = hs256(&TestClaims {
        sub: Some("bob".into()),
        ..good_claims()
    });
    let parts: Vec<&str> = genuine.split('.').collect();
    let bob_payload = bob.split('.').nth(1).expect("payload");
    let tampered = format!("{}.{}.{}", parts[0], bob_payload, parts[2]);
    assert_refused(
        auth.verify(&request(tampered), NOW),
        CloseCode::UNAUTHENTICATED,
    );
}

#[test]
fn garbage_is_unauthenticated() {
    let auth = hs_auth();
    for token in [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "...",
        "eyJ.eyJ.sig",
        "\u{0}\u{1}",
    ] {
        assert_refused(
            auth.verify(&request(token), NOW),
            CloseCode::UNAUTHENTICATED,
        );
    }
    assert_eq!(auth.verify(&request(""), NOW), Err(AuthError::MissingToken));
}

#[test]
fn token_for_another_app_is_forbidden() {
    let auth = hs_auth();
    let token = hs256(&TestClaims {
        app_id: Some("other-app".into()),
        ..good_claims()
    });
    let error = assert_refused(auth.verify(&request(token), NOW), CloseCode::FORBIDDEN);
    assert_eq!(error, AuthError::WrongApp);

    // A token without `app_id` is not scoped to any app and is not accepted.
    let unscoped = hs256(&TestClaims {
        app_id: None,
        ..good_claims()
    });
    assert_refused(
        auth.verify(&request(unscoped), NOW),
        CloseCode::UNAUTHENTICATED,
    );
}

#[test]
fn audience_is_checked_when_configured() {
    let mut config = JwtConfig::hs256(SECRET);
    config.audience = Some("imgate".into());
    let auth = JwtAuthenticator::new(config).expect("valid config");
    let with_aud = |aud| {
        hs256(&TestClaims {
            aud,
            ..good_claims()
        })
    };
    let wrong = with_aud(Some(Aud::One("someone-else".into())));
    assert_refused(auth.verify(&request(wrong), NOW), CloseCode::FORBIDDEN);
    assert_refused(
        auth.verify(&request(with_aud(None)), NOW),
        CloseCode::FORBIDDEN,
    );
    assert!(
        auth.verify(&request(with_aud(Some(Aud::One("imgate".into())))), NOW)
            .is_ok()
    );
    let many = Aud::Many(vec!["api".into(), "imgate".into()]);
    assert!(auth.verify(&request(with_aud(Some(many))), NOW).is_ok());
}

#[test]
fn issuer_is_checked_when_configured() {
    let mut config = JwtConfig::hs256(SECRET);
    config.issuer = Some("https://auth.example".into());
    let auth = JwtAuthenticator::new(config).expect("valid config");
    let with_iss = |iss: Option<&str>| {
        hs256(&TestClaims {
            iss: iss.map(Into::into),
            ..good_claims()
        })
    };
    let error = assert_refused(
        auth.verify(&request(with_iss(Some("https://evil.example"))), NOW),
        CloseCode::UNAUTHENTICATED,
    );
    assert_eq!(error, AuthError::UntrustedIssuer);
    assert_refused(
        auth.verify(&request(with_iss(None)), NOW),
        CloseCode::UNAUTHENTICATED,
    );
    assert!(
        auth.verify(&request(with_iss(Some("https://auth.example"))), NOW)
            .is_ok()
    );
}

#[test]
fn hs256_signed_with_rsa_public_key_is_refused_by_rs256() {
    let (_, public) = rsa_keys();
    let auth = JwtAuthenticator::new(JwtConfig::rs256(public.clone())).expect("valid config");
    // The classic confusion attack: the public key is public, so an attacker can HMAC with it.
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(public.as_bytes()),
        &good_claims(),
    );
    let error = assert_refused(
        auth.verify(&request(forged), NOW),
        CloseCode::UNAUTHENTICATED,
    );
    assert_eq!(error, AuthError::WrongAlgorithm);
}

#[test]
fn alg_none_is_unauthenticated() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD
        .encode(format!(r#"{{"sub":"alice","app_id":"chat","exp":{}}}"#, NOW + 3600).as_bytes());
    for token in [
        format!("{header}.{claims}."),
        format!("{header}.{claims}"),
        format!("{header}.{claims}.c2ln"),
    ] {
        assert_refused(
            hs_auth().verify(&request(token), NOW),
            CloseCode::UNAUTHENTICATED,
        );
    }
}

#[test]
fn device_claim_must_match_hello() {
    let auth = hs_auth();
    let with_device = |device: &str| {
        hs256(&TestClaims {
            device_id: Some(device.into()),
            ..good_claims()
        })
    };
    let error = assert_refused(
        auth.verify(&request(with_device("laptop")), NOW),
        CloseCode::FORBIDDEN,
    );
    assert_eq!(error, AuthError::WrongDevice);
    assert!(auth.verify(&request(with_device("phone-1")), NOW).is_ok());
}

#[test]
fn exp_and_a_sane_sub_are_required() {
    let auth = hs_auth();
    let no_exp = hs256(&TestClaims {
        exp: None,
        ..good_claims()
    });
    let error = assert_refused(
        auth.verify(&request(no_exp), NOW),
        CloseCode::UNAUTHENTICATED,
    );
    assert_eq!(error, AuthError::MissingClaim("exp"));
    for sub in [
        None,
        Some(String::new()),
        Some("u".repeat(MAX_USER_ID_LEN + 1)),
    ] {
        let token = hs256(&TestClaims {
            sub,
            ..good_claims()
        });
        assert_refused(
            auth.verify(&request(token), NOW),
            CloseCode::UNAUTHENTICATED,
        );
    }
    let longest = hs256(&TestClaims {
        sub: Some("u".repeat(MAX_USER_ID_LEN)),
        ..good_claims()
    });
    assert!(auth.verify(&request(longest), NOW).is_ok());
}

#[test]
fn bad_configs_are_rejected() {
    let short = JwtAuthenticator::new(JwtConfig::hs256(b"short".to_vec()));
    assert_eq!(short.err(), Some(JwtConfigError::SecretTooShort { len: 5 }));
    let pem_for_hs = JwtConfig {
        key: JwtKey::PublicKeyPem(rsa_keys().1.clone()),
        ..JwtConfig::hs256(SECRET)
    };
    assert!(matches!(
        JwtAuthenticator::new(pem_for_hs),
        Err(JwtConfigError::KeyKindMismatch { .. })
    ));
    let secret_for_rs = JwtConfig {
        key: JwtKey::Secret(SECRET.to_vec()),
        ..JwtConfig::rs256("")
    };
    assert!(matches!(
        JwtAuthenticator::new(secret_for_rs),
        Err(JwtConfigError::KeyKindMismatch { .. })
    ));
    assert!(matches!(
        JwtAuthenticator::new(JwtConfig::es256("not a pem")),
        Err(JwtConfigError::InvalidPem { .. })
    ));
}

#[test]
fn secrets_and_tokens_are_not_printed() {
    let config = JwtConfig::hs256(SECRET);
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
    assert!(!format!("{:?}", hs_auth()).contains("0123456789abcdef"));
    let req = request("super-secret-token");
    assert!(!format!("{req:?}").contains("super-secret-token"));
    let tokens: StaticTokens = [("super-secret-token", UserId::from("alice"))]
        .into_iter()
        .collect();
    assert!(!format!("{tokens:?}").contains("super-secret-token"));
}

#[tokio::test]
async fn minted_dev_token_authenticates_with_the_system_clock() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let token = mint_dev_token(
        SECRET,
        &AppId::from("chat"),
        &UserId::from("alice"),
        Duration::from_secs(600),
        now,
    );
    let auth: Arc<dyn Authenticator> = Arc::new(hs_auth());
    let ok = auth.authenticate(&request(token)).await.expect("valid");
    assert_eq!(ok.user.as_str(), "alice");
    assert_eq!(ok.expires_at, Some(now + 600));
}

#[tokio::test]
async fn static_tokens() {
    let mut tokens = StaticTokens::new();
    tokens.insert("dev-alice", UserId::from("alice"));
    tokens.insert("dev-bob", UserId::from("bob"));
    assert_eq!(tokens.len(), 2);
    let auth: Arc<dyn Authenticator> = Arc::new(tokens);
    let ok = auth.authenticate(&request("dev-bob")).await.expect("known");
    assert_eq!(
        ok,
        Authenticated {
            user: UserId::from("bob"),
            expires_at: None
        }
    );
    let error = auth.authenticate(&request("dev-carol")).await;
    assert_eq!(
        assert_refused(error, CloseCode::UNAUTHENTICATED),
        AuthError::UnknownToken
    );
    assert_refused(
        auth.authenticate(&request("")).await,
        CloseCode::UNAUTHENTICATED,
    );
}

#[tokio::test]
async fn per_app_routes_by_app_and_refuses_unknown_apps() {
    let mut apps = PerApp::new();
    let chat: StaticTokens = [("t", UserId::from("alice"))].into_iter().collect();
    let other: StaticTokens = [("t", UserId::from("mallory"))].into_iter().collect();
    apps.insert(AppId::from("chat"), Arc::new(chat));
    apps.insert(AppId::from("other"), Arc::new(other));
    let ok = apps.authenticate(&request("t")).await.expect("known");
    assert_eq!(ok.user.as_str(), "alice");
    let unknown = AuthRequest {
        app: AppId::from("nope"),
        ..request("t")
    };
    let error = assert_refused(apps.authenticate(&unknown).await, CloseCode::UNKNOWN_APP);
    assert_eq!(error, AuthError::UnknownApp);
}

#[test]
fn close_codes() {
    assert_eq!(
        AuthError::Backend("no".into()).close_code(),
        CloseCode::UNAUTHENTICATED
    );
    assert_eq!(
        AuthError::Unavailable("down".into()).close_code(),
        CloseCode::BACKEND_UNAVAILABLE
    );
    assert_eq!(
        CloseCode::from(&AuthError::WrongAudience),
        CloseCode::FORBIDDEN
    );
}
