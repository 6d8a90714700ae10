//! The reference sign-in page (`/signin`): static HTML, CSS and one script, compiled in and
//! served from the API's own origin, under a strict Content-Security-Policy (nothing inline,
//! nothing from elsewhere, `fetch` to this origin only). It is not part of the API: no route
//! row, no audit event, and it is served only when `passkeys.signin_page` says so (by default
//! only with the development outbox). README.md says how to use it as an app's template.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};

use super::app::Resp;

/// The page's policy: its own script, style and API, nothing else; no framing, no forms
/// posted elsewhere, no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const FILES: &[(&str, &str, &str)] = &[
    ("/signin", "text/html; charset=utf-8", include_str!("signin/index.html")),
    ("/signin/", "text/html; charset=utf-8", include_str!("signin/index.html")),
    ("/signin/signin.js", "text/javascript; charset=utf-8", include_str!("signin/signin.js")),
    ("/signin/signin.css", "text/css; charset=utf-8", include_str!("signin/signin.css")),
    ("/signin/favicon.svg", "image/svg+xml", include_str!("signin/favicon.svg")),
];

/// The page's file at `path` for a `GET` or `HEAD`, if it is one.
pub fn serve(method: &Method, path: &str) -> Option<Resp> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let (_, content_type, body) = FILES.iter().find(|(p, ..)| *p == path)?;
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(body.as_bytes()) };
    let mut resp = Resp::new(Full::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_files_are_served_and_nothing_is_inline() {
        assert!(serve(&Method::GET, "/signin").is_some());
        assert!(serve(&Method::POST, "/signin").is_none());
        assert!(serve(&Method::GET, "/signin/../Cargo.toml").is_none());
        let html = include_str!("signin/index.html");
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains(" on"), "nothing inline");
        assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere");
        let js = include_str!("signin/signin.js");
        assert!(!js.contains("localStorage") && !js.contains("sessionStorage") && !js.contains("document.cookie"));
        assert!(!js.contains("eval(") && !js.contains("innerHTML"));
    }
}
