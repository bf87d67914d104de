//! Who may talk to the server. A page on any web site can make the browser send
//! requests to 127.0.0.1, and with DNS rebinding read the answers: its own name
//! resolves to this machine, so the browser's same-origin rule holds, but the
//! request's `Host` names the attacker's site. Requests are therefore answered only
//! when `Host` names this machine (a loopback name, an IP address, which rebinding
//! cannot put there, or a name allowed with `--allow-host`), and requests that
//! change state (`POST /api/frame`) only from the server's own pages.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::handlers::ApiError;
use super::App;

/// The names `Host` may carry, besides IP addresses.
#[derive(Clone, Debug, Default)]
pub struct HostRules {
    /// Lower case, without a trailing dot or a port.
    pub allowed: Vec<String>,
    /// The port the server listens on: an `Origin` must name it.
    pub port: u16,
}

impl HostRules {
    pub fn new(extra: &[String]) -> HostRules {
        let mut allowed = vec!["localhost".to_string()];
        allowed.extend(extra.iter().map(|h| normal(h).0));
        HostRules { allowed, port: 0 }
    }

    /// Whether `host` (a `Host` value: name or address, maybe with a port) is this
    /// server's.
    pub fn allows(&self, host: &str) -> bool {
        let (name, _) = normal(host);
        !name.is_empty()
            && (name.parse::<std::net::IpAddr>().is_ok() || self.allowed.contains(&name))
    }

    /// Whether `origin` (`scheme://host[:port]`) is one of this server's pages.
    fn own_origin(&self, origin: &str) -> bool {
        let Some(rest) = origin.strip_prefix("http://") else {
            return false;
        };
        let (_, port) = normal(rest);
        self.allows(rest) && port.unwrap_or(80) == self.port
    }
}

/// `Host` or authority, lower case, split into name and port: `[::1]:80` gives
/// `::1` and 80; `LocalHost.` gives `localhost`.
fn normal(host: &str) -> (String, Option<u16>) {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) => (ip.to_string(), tail.strip_prefix(':')),
            None => (String::new(), None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n.to_string(), Some(p)),
            _ => (host.clone(), None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => return (String::new(), None),
        },
        None => None,
    };
    (name.trim_end_matches('.').to_string(), port)
}

fn refuse(status: StatusCode, msg: String) -> Response {
    ApiError(status, msg).into_response()
}

/// The middleware: checks `Host` (and an absolute request target) on every request,
/// and the origin of requests that change state.
pub async fn check(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let rules = &app.hosts;
    let headers = req.headers();
    let named = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .into_iter()
        .chain(
            headers
                .get_all(header::HOST)
                .iter()
                .map(|h| h.to_str().unwrap_or("").to_string()),
        );
    let mut any = false;
    for host in named {
        any = true;
        if !rules.allows(&host) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server answers only requests for its own address, not for host \
                     {host:?}; to reach it under that name, start it with --allow-host {}",
                    normal(&host).0
                ),
            );
        }
    }
    if !any {
        return refuse(StatusCode::BAD_REQUEST, "the request names no Host".into());
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Some(why) = foreign(rules, headers) {
            return refuse(StatusCode::FORBIDDEN, why);
        }
    }
    next.run(req).await
}

/// Why a state-changing request comes from another site's page, if it does. Tools
/// (curl, scripts) send neither header and are let through.
fn foreign(rules: &HostRules, headers: &HeaderMap) -> Option<String> {
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase());
    if let Some(site) = site.filter(|s| s != "same-origin" && s != "none") {
        return Some(format!(
            "refused: the request comes from another origin (Sec-Fetch-Site: {site}); \
             frames are taken only from this server's own page"
        ));
    }
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().unwrap_or("");
    (!rules.own_origin(text)).then(|| {
        format!(
            "refused: the request comes from another origin ({text:?}); frames are taken \
             only from this server's own page"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_this_machines_names_and_addresses_only() {
        let mut r = HostRules::new(&["Photos.LAN".into()]);
        r.port = 7878;
        for ok in [
            "localhost",
            "LOCALHOST.:7878",
            "127.0.0.1:7878",
            "[::1]",
            "[::1]:7878",
            "10.1.2.3",
            "photos.lan:8080",
        ] {
            assert!(r.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:7878",
            "",
            "[::1",
            "localhost:notaport",
        ] {
            assert!(!r.allows(bad), "{bad}");
        }
        assert!(r.own_origin("http://localhost:7878"));
        assert!(!r.own_origin("http://localhost:7879"));
        assert!(!r.own_origin("null"));
        assert!(!r.own_origin("https://evil.example"));
    }
}
