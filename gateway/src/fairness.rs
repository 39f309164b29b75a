//! Fair shares of the request slots: no one connection, and (when configured) no one client
//! address, can hold more than its share of the gateway's concurrent-request bound.
//!
//! The global bound (`max_concurrent_requests`, [`crate::api::Api`]'s semaphore) protects the
//! gateway; a share protects the other clients from one that opens many streams and never reads
//! them (HTTP/2 and HTTP/3 multiplex up to `max_streams_per_connection` requests on one
//! connection). Every connection gets a [`Share`]: its own semaphore of
//! `max_requests_per_connection` permits, plus the semaphore of its client address when
//! `max_requests_per_client` is set. The transports put it in each request's extensions; a blob
//! request takes a permit of every semaphore of its share first and only then a global slot, so a
//! connection past its share is answered 429 without touching the global pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The request slots one connection may hold, carried in request extensions.
#[derive(Clone)]
pub struct Share {
    connection: Arc<Semaphore>,
    /// Shared by every connection from the same client address; `None`: no per-client bound.
    client: Option<Arc<Semaphore>>,
}

/// Which share ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareRefused {
    Connection,
    Client,
}

impl ShareRefused {
    /// The metric label.
    pub fn scope(self) -> &'static str {
        match self {
            ShareRefused::Connection => "connection",
            ShareRefused::Client => "client",
        }
    }
}

/// Permits of a [`Share`], released when dropped (with the request slot that holds them).
pub struct SharePermits {
    _connection: OwnedSemaphorePermit,
    _client: Option<OwnedSemaphorePermit>,
}

impl Share {
    /// A share of `per_connection` slots (0: no per-connection bound beyond the global one),
    /// within `client`'s share if there is one.
    pub fn new(per_connection: usize, client: Option<Arc<Semaphore>>) -> Self {
        let permits = if per_connection == 0 {
            Semaphore::MAX_PERMITS
        } else {
            per_connection
        };
        Self {
            connection: Arc::new(Semaphore::new(permits)),
            client,
        }
    }

    /// One slot of this share, or which bound refused it. Never waits.
    pub fn try_take(&self) -> Result<SharePermits, ShareRefused> {
        let connection = self
            .connection
            .clone()
            .try_acquire_owned()
            .map_err(|_| ShareRefused::Connection)?;
        let client = match &self.client {
            Some(client) => Some(
                client
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ShareRefused::Client)?,
            ),
            None => None,
        };
        Ok(SharePermits {
            _connection: connection,
            _client: client,
        })
    }
}

/// The per-client-address shares, created on a client's first connection and forgotten when its
/// last one closes.
pub struct Clients {
    /// Slots one address may hold over all its connections; 0: no per-client bound.
    per_client: usize,
    /// Loopback clients are not bounded (load generators, a local proxy or sidecar that every
    /// request comes through).
    exempt_loopback: bool,
    shares: Mutex<ClientMap>,
}

#[derive(Default)]
struct ClientMap {
    map: HashMap<IpAddr, Weak<Semaphore>>,
    /// Entries after the last sweep of closed clients' entries.
    swept_at: usize,
}

impl Clients {
    pub fn new(per_client: usize, exempt_loopback: bool) -> Self {
        Self {
            per_client,
            exempt_loopback,
            shares: Mutex::new(ClientMap::default()),
        }
    }

    /// The share of a new connection from `peer`.
    pub fn share(&self, peer: IpAddr, per_connection: usize) -> Share {
        Share::new(per_connection, self.client(peer))
    }

    fn client(&self, peer: IpAddr) -> Option<Arc<Semaphore>> {
        if self.per_client == 0 || (self.exempt_loopback && peer.to_canonical().is_loopback()) {
            return None;
        }
        let peer = peer.to_canonical();
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = shares.map.get(&peer).and_then(Weak::upgrade) {
            return Some(live);
        }
        let semaphore = Arc::new(Semaphore::new(self.per_client));
        shares.map.insert(peer, Arc::downgrade(&semaphore));
        // Entries of clients whose connections all closed are dropped once the map has
        // doubled since the last sweep: amortised O(1) per connection, bounded by live clients.
        if shares.map.len() > 64 && shares.map.len() > 2 * shares.swept_at {
            shares.map.retain(|_, share| share.strong_count() > 0);
            shares.swept_at = shares.map.len();
        }
        Some(semaphore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_held_to_its_share_and_gets_it_back() {
        let share = Share::new(2, None);
        let a = share.try_take().unwrap();
        let _b = share.try_take().unwrap();
        assert_eq!(share.try_take().err(), Some(ShareRefused::Connection));
        drop(a);
        assert!(share.try_take().is_ok());
    }

    #[test]
    fn connections_of_one_client_share_its_bound() {
        let clients = Clients::new(3, true);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let one = clients.share(peer, 2);
        let two = clients.share(peer, 2);
        let _held = [one.try_take().unwrap(), one.try_take().unwrap()];
        let _third = two.try_take().unwrap();
        assert_eq!(two.try_take().err(), Some(ShareRefused::Client));
        // Another address has its own.
        let other = clients.share("192.0.2.8".parse().unwrap(), 2);
        assert!(other.try_take().is_ok());
        // Loopback is exempt unless asked otherwise.
        let local = clients.share("127.0.0.1".parse().unwrap(), 0);
        let _many: Vec<_> = (0..10).map(|_| local.try_take().unwrap()).collect();
        let strict = Clients::new(1, false).share("::1".parse().unwrap(), 0);
        let _one = strict.try_take().unwrap();
        assert_eq!(strict.try_take().err(), Some(ShareRefused::Client));
    }

    #[test]
    fn closed_clients_are_forgotten() {
        let clients = Clients::new(1, false);
        for i in 0..1000u32 {
            let share = clients.share(IpAddr::from(i.to_be_bytes()), 1);
            drop(share);
        }
        let len = clients.shares.lock().unwrap().map.len();
        assert!(len <= 130, "{len} entries kept for closed clients");
    }
}
