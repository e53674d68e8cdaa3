//! Rate limits, answered with 429 and `Retry-After`: per user on authenticated routes
//! (checked where the user is known, in `AuthUser`), and per client address on every route:
//! a high limit for provider webhooks (many users' deliveries come from the same few
//! provider addresses, and the handler verifies each one), a lower one for everything else.
//! A limit of 0 turns that limit off.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::{Config, UserId};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct Limiters {
    user: Option<Keyed<UserId>>,
    ip: Option<Keyed<IpAddr>>,
    webhook: Option<Keyed<IpAddr>>,
    trusted_proxies: usize,
    clock: DefaultClock,
}

fn keyed<K: Hash + Eq + Clone>(per_minute: u32) -> Option<Keyed<K>> {
    NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl Limiters {
    pub fn new(config: &Config) -> Arc<Self> {
        let limiters = Arc::new(Self {
            user: keyed(config.rate_limit_user_per_minute),
            ip: keyed(config.rate_limit_ip_per_minute),
            webhook: keyed(config.rate_limit_webhook_per_minute),
            trusted_proxies: config.trusted_proxies as usize,
            clock: DefaultClock::default(),
        });
        // Forget idle keys now and then, so the maps hold only recent clients.
        let weak: Weak<Self> = Arc::downgrade(&limiters);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(limiters) = weak.upgrade() else {
                    break;
                };
                limiters.sweep();
            }
        });
        limiters
    }

    fn check<K: Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K>>,
        key: &K,
    ) -> Result<(), ApiError> {
        match limiter {
            Some(l) => l.check_key(key).map_err(|not_until| {
                ApiError::RateLimited(not_until.wait_time_from(self.clock.now()))
            }),
            None => Ok(()),
        }
    }

    /// One request of an authenticated user.
    pub fn user(&self, user: UserId) -> Result<(), ApiError> {
        self.check(&self.user, &user)
    }

    fn sweep(&self) {
        if let Some(l) = &self.user {
            l.retain_recent();
            l.shrink_to_fit();
        }
        for l in [&self.ip, &self.webhook].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The client's address: the TCP peer, or with `trusted` proxies in front, the address the
/// nearest untrusted hop reported in `X-Forwarded-For` (entries further left can be forged).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: usize) -> Option<IpAddr> {
    if trusted == 0 {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    hops.len()
        .checked_sub(trusted)
        .and_then(|i| hops.get(i))
        .and_then(|h| h.parse().ok())
        .or(peer)
}

/// The per-address limit, before routing to a handler.
pub async fn by_address(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/health" || path == "/ready" {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let limiters = &state.limiters;
    if let Some(ip) = client_ip(request.headers(), peer, limiters.trusted_proxies) {
        let limiter = if path.starts_with("/api/webhooks/") {
            &limiters.webhook
        } else {
            &limiters.ip
        };
        if let Err(e) = limiters.check(limiter, &ip) {
            return e.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_hops() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        assert_eq!(
            client_ip(&headers, Some(peer), 0),
            Some(peer),
            "no proxy: the peer"
        );
        assert_eq!(
            client_ip(&headers, Some(peer), 1),
            Some("203.0.113.7".parse().unwrap()),
            "one proxy: what it saw, not what the client wrote"
        );
        assert_eq!(
            client_ip(&headers, Some(peer), 3),
            Some(peer),
            "fewer hops than proxies"
        );
    }

    #[test]
    fn a_user_over_the_limit_is_told_when_to_come_back() {
        let limiters = Limiters {
            user: keyed(2),
            ip: None,
            webhook: None,
            trusted_proxies: 0,
            clock: DefaultClock::default(),
        };
        let (a, b) = (UserId(uuid::Uuid::new_v4()), UserId(uuid::Uuid::new_v4()));
        assert!(limiters.user(a).is_ok() && limiters.user(a).is_ok());
        match limiters.user(a) {
            Err(ApiError::RateLimited(wait)) => assert!(wait > Duration::from_secs(20)),
            other => panic!("{other:?}"),
        }
        assert!(limiters.user(b).is_ok(), "others are not affected");
    }
}
