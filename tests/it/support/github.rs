//! Sending signed GitHub-style webhooks to a gateway under test.

use serde_json::Value;

use super::signing;

/// `sha256=<hex HMAC-SHA256(body)>`, as GitHub signs.
pub fn signature(secret: &str, body: &[u8]) -> String {
    signing::github(secret, body)
}

/// Posts a signed event to `url` and returns the status and JSON answer.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, Value) {
    post_with_signature(client, url, &signature(secret, body), event, delivery, body).await
}

/// [`post`] with `signature` as `X-Hub-Signature-256`, whatever it is.
pub async fn post_with_signature(
    client: &reqwest::Client,
    url: &str,
    signature: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (u16, Value) {
    let response = client
        .post(url)
        .header("X-Hub-Signature-256", signature)
        .header("X-GitHub-Delivery", delivery)
        .header("X-GitHub-Event", event)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
