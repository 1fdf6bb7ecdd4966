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
    let response = signed(client, url, signature, event, delivery, body)
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// [`post`] that hands back a request the gateway did not answer (it was
/// killed, or is down) instead of failing the test; the status otherwise.
pub async fn try_post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> reqwest::Result<u16> {
    let request = signed(client, url, &signature(secret, body), event, delivery, body);
    Ok(request.send().await?.status().as_u16())
}

fn signed(
    client: &reqwest::Client,
    url: &str,
    signature: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("X-Hub-Signature-256", signature)
        .header("X-GitHub-Delivery", delivery)
        .header("X-GitHub-Event", event)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
}
