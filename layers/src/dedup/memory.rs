use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::store::{Claim, DedupStore, StoreFuture};
use super::InvalidDedup;

/// A bounded in-memory [`DedupStore`]: at most `capacity` ids (leases and records
/// together), each until its lease or TTL ends; when full, the **oldest** entry (the
/// one written longest ago) is evicted first, whatever its state.
///
/// `Clone`, and the clones share one map: give every connection of a consumer, and
/// several consumers of one process, the same store. It cannot be shared across
/// processes (use the Redis store for that), and it is empty after a restart.
///
/// Times are tokio's ([`tokio::time::Instant`]), so tests can drive them with
/// `tokio::time::pause`.
///
/// ```
/// use tower_mqtt_layers::dedup::MemoryStore;
///
/// let store = MemoryStore::new(100_000)?;
/// assert_eq!((store.len(), store.capacity()), (0, 100_000));
/// # Ok::<(), tower_mqtt_layers::dedup::InvalidDedup>(())
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    entries: Arc<Mutex<Entries>>,
}

struct Entries {
    capacity: usize,
    by_key: HashMap<String, Entry>,
    /// Keys by write order (a sequence number): the first is the oldest.
    by_age: BTreeMap<u64, String>,
    next: u64,
}

struct Entry {
    written: u64,
    until: Instant,
    /// `Some(token)` for a lease, `None` for a record.
    lease: Option<String>,
}

impl MemoryStore {
    /// A store for at most `capacity` ids.
    ///
    /// # Errors
    ///
    /// [`InvalidDedup::ZeroCapacity`] when `capacity` is 0.
    pub fn new(capacity: usize) -> Result<Self, InvalidDedup> {
        if capacity == 0 {
            return Err(InvalidDedup::ZeroCapacity);
        }
        Ok(Self {
            entries: Arc::new(Mutex::new(Entries {
                capacity,
                by_key: HashMap::new(),
                by_age: BTreeMap::new(),
                next: 0,
            })),
        })
    }

    /// The most ids it keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Entries held now (leases and records, expired ones not yet dropped included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether it holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is recorded as processed now (not expired).
    #[must_use]
    pub fn is_recorded(&self, key: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .by_key
            .get(key)
            .is_some_and(|e| e.lease.is_none() && e.until > now)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // No code panics while holding the lock; a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Entries {
    /// Store `key`'s entry as the newest, evicting the oldest ones beyond capacity.
    fn put(&mut self, key: &str, until: Instant, lease: Option<String>) {
        let written = self.next;
        self.next += 1;
        if let Some(old) = self.by_key.get(key) {
            self.by_age.remove(&old.written);
        }
        self.by_key.insert(
            key.to_owned(),
            Entry {
                written,
                until,
                lease,
            },
        );
        self.by_age.insert(written, key.to_owned());
        while self.by_key.len() > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_key.remove(&oldest);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_age.remove(&old.written);
        }
    }
}

/// `now + d`, or about 30 years from now when that is past what an `Instant` holds
/// (`Duration::MAX` means "for good").
fn deadline(now: Instant, d: Duration) -> Instant {
    const FOR_GOOD: Duration = Duration::from_secs(30 * 365 * 86_400);
    now.checked_add(d.min(FOR_GOOD)).unwrap_or(now)
}

impl DedupStore for MemoryStore {
    fn claim(&self, key: &str, token: &str, lease: Duration) -> StoreFuture<Claim> {
        let now = Instant::now();
        let mut entries = self.lock();
        let claim = match entries.by_key.get(key) {
            Some(e) if e.until > now && e.lease.is_none() => Claim::Done,
            Some(e) if e.until > now => Claim::Held,
            _ => {
                entries.put(key, deadline(now, lease), Some(token.to_owned()));
                Claim::Acquired
            }
        };
        Box::pin(std::future::ready(Ok(claim)))
    }

    fn record(&self, key: &str, ttl: Duration) -> StoreFuture<()> {
        let until = deadline(Instant::now(), ttl);
        self.lock().put(key, until, None);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, key: &str, token: &str) -> StoreFuture<()> {
        let mut entries = self.lock();
        let ours = entries
            .by_key
            .get(key)
            .is_some_and(|e| e.lease.as_deref() == Some(token));
        if ours {
            entries.remove(key);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.lock();
        f.debug_struct("MemoryStore")
            .field("capacity", &entries.capacity)
            .field("len", &entries.by_key.len())
            .finish()
    }
}
