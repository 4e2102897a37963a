//! Guessing secrets at `/pair` and `/enroll`: with the default limits (10
//! per minute per source IP, burst 10), once the burst is spent at least
//! 99% of guesses are turned away with 429 before any work, and malformed
//! guesses never reach the database.

use crate::common;
use reqwest::StatusCode;
use serde_json::json;
use swrm::auth::secret::{SecretKind, generate};

const GUESSES: usize = 300;

/// Sends `GUESSES` guesses to `path`; answers (guesses answered 401 while
/// the burst lasted, guesses answered 429 after it, after-burst total).
async fn guess(
    s: &common::TestServer,
    path: &str,
    body: impl Fn(usize) -> serde_json::Value,
) -> (usize, usize, usize) {
    let mut statuses = Vec::with_capacity(GUESSES);
    for i in 0..GUESSES {
        statuses.push(s.post(path, None, body(i)).await.status);
    }
    let first_limited = statuses
        .iter()
        .position(|s| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("the burst runs out");
    assert!(
        statuses[..first_limited]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let after = &statuses[first_limited..];
    let limited = after
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    println!(
        "{path}: burst of {first_limited}, then {limited} of {} guesses answered 429",
        after.len()
    );
    (first_limited, limited, after.len())
}

#[tokio::test]
async fn after_the_burst_at_least_99_percent_of_guesses_get_429() {
    let s = common::start().await;
    let (burst, limited, after) = guess(
        &s,
        "/api/public/v1/pair",
        |_| json!({"provisioning_token": generate(SecretKind::ProvisioningToken).plaintext}),
    )
    .await;
    assert!(burst <= 11, "burst of {burst}");
    assert!(limited * 100 >= after * 99, "{limited} of {after} limited");

    // Enroll shares the bucket: the same address is already limited.
    let a = s
        .post(
            "/api/public/v1/enroll",
            None,
            json!({"enrollment_code": generate(SecretKind::EnrollmentCode).plaintext,
                   "serial_number": "SN"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn enroll_guesses_are_limited_and_malformed_ones_never_reach_the_database() {
    let s = common::start().await;
    let before = s.app.auth_db_lookups();
    let (burst, limited, after) = guess(&s, "/api/public/v1/enroll", |i| {
        // Mistyped codes: the checksum fails.
        json!({"enrollment_code": format!("swrm_ec_{i:0>30}"), "serial_number": "SN"})
    })
    .await;
    assert!(burst <= 11, "burst of {burst}");
    assert!(limited * 100 >= after * 99, "{limited} of {after} limited");
    assert_eq!(
        s.app.auth_db_lookups(),
        before,
        "malformed codes cost no database query"
    );
}
