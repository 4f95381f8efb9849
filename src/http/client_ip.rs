//! The client's address: the socket's peer, or, when the peer is a trusted
//! proxy, the address it reports in `X-Forwarded-For`; and what of it is
//! forwarded to Segment as `context.ip` (the stricter of the service's and the
//! workspace's policy).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;

use crate::domain::IpPolicy;

const FORWARDED_FOR: &str = "x-forwarded-for";

#[derive(Debug)]
pub struct ClientIps {
    trusted_proxies: Vec<IpNet>,
    policy: IpPolicy,
    /// Requests whose `X-Forwarded-For` was ignored: their peer is not trusted.
    ignored_forwarding: Counter,
    /// Whether that was logged already (once per process).
    ignored_forwarding_logged: AtomicBool,
}

impl ClientIps {
    pub fn new(trusted_proxies: Vec<IpNet>, policy: IpPolicy, ignored_forwarding: Counter) -> ClientIps {
        ClientIps { trusted_proxies, policy, ignored_forwarding, ignored_forwarding_logged: AtomicBool::new(false) }
    }

    /// The client's address of a request (`None` without a peer, as in unit tests).
    pub fn of(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(self.client(peer, &parts.headers))
    }

    /// The client's address. `X-Forwarded-For` is believed only as far as it
    /// was written by trusted proxies: read from the right (the nearest hop),
    /// the first address that is not a trusted proxy is the client.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            if headers.contains_key(FORWARDED_FOR) {
                self.forwarding_ignored(peer);
            }
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(address) = hop.parse::<IpAddr>() else { break };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        client
    }

    /// What `context.ip` carries for this client of a workspace with
    /// `workspace_policy`: the stricter of it and the service's policy.
    pub fn forwarded(&self, client: IpAddr, workspace_policy: IpPolicy) -> Option<IpAddr> {
        self.policy.and(workspace_policy).apply(client)
    }

    /// A peer that is not a trusted proxy sent `X-Forwarded-For`: most likely
    /// a load balancer missing from `ingest.trusted_proxies`, behind which every
    /// browser shares one address (and its rate limit). Counted, logged once.
    fn forwarding_ignored(&self, peer: IpAddr) {
        self.ignored_forwarding.inc();
        if !self.ignored_forwarding_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %peer,
                "X-Forwarded-For from a peer that is not a trusted proxy is ignored: behind a load balancer, list it \
                 in PRODUKTLY_INGEST_TRUSTED_PROXIES, or every browser shares its address and rate limit"
            );
        }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append(FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let ignored = Counter::default();
        let ips = ClientIps::new(vec!["10.0.0.0/8".parse().unwrap()], IpPolicy::Full, ignored.clone());
        let spoofed = headers(&["1.1.1.1, 203.0.113.7"]);
        assert_eq!(ips.client(ip("198.51.100.2"), &spoofed), ip("198.51.100.2"), "an untrusted peer");
        assert_eq!(ips.client(ip("198.51.100.2"), &headers(&[])), ip("198.51.100.2"));
        assert_eq!(ignored.get(), 1, "the ignored header is counted");
        assert_eq!(ips.client(ip("10.0.0.5"), &spoofed), ip("203.0.113.7"), "the nearest untrusted hop");
        let chain = headers(&["1.1.1.1", "203.0.113.7, 10.0.0.9"]);
        assert_eq!(ips.client(ip("10.0.0.5"), &chain), ip("203.0.113.7"));
        assert_eq!(ips.client(ip("10.0.0.5"), &headers(&["garbage"])), ip("10.0.0.5"));
        assert_eq!(ips.client(ip("10.0.0.5"), &headers(&["10.1.1.1"])), ip("10.1.1.1"), "all hops trusted");
    }

    #[test]
    fn the_stricter_of_the_service_and_workspace_policy_applies() {
        let truncating = ClientIps::new(vec![], IpPolicy::Truncated, Counter::default());
        assert_eq!(truncating.forwarded(ip("203.0.113.77"), IpPolicy::Full), Some(ip("203.0.113.0")));
        assert_eq!(truncating.forwarded(ip("203.0.113.77"), IpPolicy::Omitted), None);
        let full = ClientIps::new(vec![], IpPolicy::Full, Counter::default());
        assert_eq!(full.forwarded(ip("203.0.113.77"), IpPolicy::Full), Some(ip("203.0.113.77")));
        assert_eq!(full.forwarded(ip("2001:db8:85a3:1:2:3:4:5"), IpPolicy::Truncated), Some(ip("2001:db8:85a3::")));
    }
}
