use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::store::{Claim, DedupStore, StoreFuture};
use super::StoreError;

/// The Redis key prefix of a [`RedisStore`] unless [`RedisStore::prefix`] sets another.
pub const DEFAULT_PREFIX: &str = "tower-mqtt:dedup:";

/// The value of a processed id's key; a lease's value is its token, never this.
const DONE: &str = "done";

/// A [`DedupStore`] in Redis, shared by every process that uses the same server and
/// [`prefix`](Self::prefix) (feature `dedup-redis`).
///
/// Each id is one string key, `<prefix><id>`:
///
/// * a **lease** is the claim's random token, written with `SET key token NX PX lease`
///   (so at most one caller gets it) — the claim is a short Lua script that does this
///   `SET` and, when the key exists, tells a record from a lease in the same atomic
///   step;
/// * a **record** is `SET key "done" PX ttl`, which replaces the lease after success;
/// * a failed call's **release** deletes the key only if it still holds the caller's
///   token (a Lua compare-and-delete), so a record, or a lease that expired and was
///   claimed by someone else, is never removed.
///
/// Every key expires (`PX`), so Redis holds at most the ids of one TTL.
///
/// It talks through a [`ConnectionManager`] (re-exported as
/// [`dedup::redis`](super::redis)): clones share one multiplexed connection, which
/// reconnects by itself after Redis restarts. A command that fails (Redis down, the
/// manager's response timeout, 500 ms by default) is a [`StoreError`].
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_mqtt_layers::dedup::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379/")
///     .await?
///     .prefix("orders-ingest:dedup:"); // e.g. the consumer group
/// assert_eq!(store.key("id-7"), "orders-ingest:dedup:id-7");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    release: Script,
}

impl RedisStore {
    /// A store on `connection`, with keys under [`DEFAULT_PREFIX`].
    #[must_use]
    pub fn new(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Arc::from(DEFAULT_PREFIX),
            scripts: Arc::new(Scripts {
                // 0: acquired, 1: recorded, 2: held by another lease.
                claim: Script::new(
                    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end \
                     if redis.call('GET', KEYS[1]) == ARGV[3] then return 1 end \
                     return 2",
                ),
                release: Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('DEL', KEYS[1]) end \
                     return 0",
                ),
            }),
        }
    }

    /// Connect to the Redis at `url` (`redis://host:port/db`) with a
    /// [`ConnectionManager`] of default settings.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] (operation `"connect"`) when the URL is invalid or Redis does
    /// not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::new("connect", e))?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(|e| StoreError::new("connect", e))?;
        Ok(Self::new(connection))
    }

    /// Put every key under `prefix` (default [`DEFAULT_PREFIX`]): a namespace for one
    /// consumer group or application, so that two of them never see each other's ids.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// The Redis key of message id `id`.
    #[must_use]
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

/// Milliseconds for `PX`: at least 1, at most what Redis takes for an expiry.
fn millis(d: Duration) -> u64 {
    const MAX: u64 = i64::MAX as u64 / 2;
    u64::try_from(d.as_millis()).unwrap_or(MAX).clamp(1, MAX)
}

impl DedupStore for RedisStore {
    fn claim(&self, key: &str, token: &str, lease: Duration) -> StoreFuture<Claim> {
        let (key, token) = (self.key(key), token.to_owned());
        let mut connection = self.connection.clone();
        let scripts = self.scripts.clone();
        Box::pin(async move {
            let found: i64 = scripts
                .claim
                .key(key)
                .arg(token)
                .arg(millis(lease))
                .arg(DONE)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| StoreError::new("claim", e))?;
            match found {
                0 => Ok(Claim::Acquired),
                1 => Ok(Claim::Done),
                2 => Ok(Claim::Held),
                other => Err(StoreError::new(
                    "claim",
                    format!("the claim script returned {other}, not 0, 1 or 2"),
                )),
            }
        })
    }

    fn record(&self, key: &str, ttl: Duration) -> StoreFuture<()> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        Box::pin(async move {
            redis::cmd("SET")
                .arg(key)
                .arg(DONE)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut connection)
                .await
                .map_err(|e| StoreError::new("record", e))
        })
    }

    fn release(&self, key: &str, token: &str) -> StoreFuture<()> {
        let (key, token) = (self.key(key), token.to_owned());
        let mut connection = self.connection.clone();
        let scripts = self.scripts.clone();
        Box::pin(async move {
            scripts
                .release
                .key(key)
                .arg(token)
                .invoke_async::<i64>(&mut connection)
                .await
                .map(drop)
                .map_err(|e| StoreError::new("release", e))
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
