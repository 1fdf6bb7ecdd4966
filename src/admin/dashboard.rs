//! `GET /`: the ops dashboard, a static page (HTML, JavaScript and CSS built
//! into the binary) that calls the admin API from the browser with the token
//! the user enters. The page itself holds no data, so it needs no token; every
//! figure on it comes from `/admin/*`, which does.
//!
//! Script and style are served from their own paths so the Content-Security-
//! Policy can forbid inline code: only this origin's script and style run,
//! and the page talks to nothing but this origin.

use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderValue};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Sent with every dashboard asset.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small, and a new gateway version must not run with yesterday's script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard.js`
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard.css`
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_inlines_no_code() {
        assert!(PAGE.contains(r#"<script src="dashboard.js" defer></script>"#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="dashboard.css">"#));
        // The CSP forbids inline script, style and event handlers: none may be there.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(!PAGE.contains("<style") && !PAGE.contains("style=\""));
        assert!(!PAGE.contains(" onclick=") && !PAGE.contains(" onload="));
    }

    #[test]
    fn the_script_never_writes_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!SCRIPT.contains(sink), "dashboard.js uses {sink}");
        }
    }
}
