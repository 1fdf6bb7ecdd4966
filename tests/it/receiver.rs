//! The scriptable receiver does what later tests rely on.

use std::time::{Duration, Instant};

use crate::support::receiver::{Receiver, Reply};

#[tokio::test]
async fn answers_from_its_script_in_order_then_falls_back() {
    let receiver = Receiver::start().await;
    receiver
        .then(Reply::status(503).times(2))
        .then(Reply::status(429).retry_after("2"));
    receiver.otherwise(Reply::status(204));
    let client = reqwest::Client::new();
    let mut seen = Vec::new();
    for i in 0..5 {
        let response = client
            .post(receiver.url("/hook?x=1"))
            .header("x-test", i.to_string())
            .body(format!("body-{i}"))
            .send()
            .await
            .expect("receiver answers");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        seen.push((response.status().as_u16(), retry_after));
    }
    assert_eq!(
        seen,
        vec![
            (503, None),
            (503, None),
            (429, Some("2".to_owned())),
            (204, None),
            (204, None)
        ]
    );
    let recorded = receiver.requests();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[3].method, http::Method::POST);
    assert_eq!(recorded[3].uri, "/hook?x=1");
    assert_eq!(recorded[3].headers["x-test"], "3");
    assert_eq!(&recorded[3].body[..], b"body-3");
}

#[tokio::test]
async fn delays_and_closes_connections_when_told() {
    let receiver = Receiver::start().await;
    receiver
        .then(Reply::ok().delay(Duration::from_millis(300)))
        .then(Reply::close());
    let client = reqwest::Client::new();
    let started = Instant::now();
    let slow = client
        .post(receiver.url("/"))
        .send()
        .await
        .expect("slow answer");
    assert_eq!(slow.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let closed = client.post(receiver.url("/")).body("x").send().await;
    assert!(
        closed.is_err(),
        "connection closed without an answer: {closed:?}"
    );
    let recorded = receiver.wait_for(2, Duration::from_secs(1)).await;
    assert_eq!(recorded.len(), 2, "a closed request is still recorded");
    assert!(recorded[0].at < recorded[1].at);
    assert!(recorded[0].abandoned.is_none() && recorded[0].answered.is_some());
    assert!(
        recorded[1].answered.is_none() && recorded[1].abandoned.is_some(),
        "a closed request is marked abandoned, with when"
    );
}
