//! Parsed NIC states kept between ingests, so that recompute need not read
//! and parse again the states of the NICs a batch touches (about half of
//! them were stored by the batches just before).
//!
//! A state is stored once under its fingerprint and never changed or
//! deleted, so a cached state is the stored one as long as the cache holds
//! only what was committed: ingests add to it after their commit. Each
//! database has its own cache (keyed by server, name and the database's
//! oid, so a database dropped and created again under the same name starts
//! empty), because the first state stored under a fingerprint fixes the
//! casing of the ids in it, which another database may have stored
//! otherwise.
//!
//! The cache is bounded: two generations of at most [`GENERATION`] states;
//! when the newer is full it becomes the older and the older is dropped. A
//! state found in the older generation moves to the newer.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::{PgConnection, PgPool};

use crate::model::NicState;
use crate::model::hash::FastMap;

/// States a generation holds (a state is about 1 to 2 KB in memory).
pub(super) const GENERATION: usize = 32_768;

#[derive(Default)]
struct Generations {
    new: FastMap<String, Arc<NicState>>,
    old: FastMap<String, Arc<NicState>>,
}

impl Generations {
    fn put(&mut self, fingerprint: String, state: Arc<NicState>) {
        if self.new.len() >= GENERATION && !self.new.contains_key(&fingerprint) {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(fingerprint, state);
    }
}

/// The parsed states of one database.
#[derive(Default)]
pub(crate) struct StateCache(Mutex<Generations>);

static CACHES: LazyLock<Mutex<HashMap<String, Arc<StateCache>>>> = LazyLock::new(Default::default);

impl StateCache {
    /// The cache of the database that `conn` (a connection of `pool`) is on.
    pub(super) async fn of(
        pool: &PgPool,
        conn: &mut PgConnection,
    ) -> sqlx::Result<Arc<StateCache>> {
        let db: String = sqlx::query_scalar(
            "SELECT current_database() || ':' || oid FROM pg_database WHERE datname = current_database()",
        )
        .fetch_one(conn)
        .await?;
        let o = pool.connect_options();
        let key = format!("{}:{}/{db}", o.get_host(), o.get_port());
        let mut caches = CACHES.lock().expect("state caches");
        Ok(caches.entry(key).or_default().clone())
    }

    /// The state stored under `fingerprint`, if cached.
    pub(super) fn get(&self, fingerprint: &str) -> Option<Arc<NicState>> {
        let mut g = self.0.lock().expect("state cache");
        if let Some(s) = g.new.get(fingerprint) {
            return Some(s.clone());
        }
        let (f, s) = g.old.remove_entry(fingerprint)?;
        g.put(f, s.clone());
        Some(s)
    }

    /// Adds states that are committed under these fingerprints.
    pub(super) fn put_all(&self, states: Vec<(String, Arc<NicState>)>) {
        let mut g = self.0.lock().expect("state cache");
        for (f, s) in states {
            g.put(f, s);
        }
    }

    /// How many states are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.0.lock().expect("state cache");
        g.new.len() + g.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ArmId;

    fn state(i: usize) -> Arc<NicState> {
        let id = format!(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/n{i}"
        );
        Arc::new(NicState {
            id: ArmId::parse(&id).unwrap(),
            name: format!("n{i}"),
            mac: None,
            vm: None,
            ips: Vec::new(),
        })
    }

    #[test]
    fn holds_at_most_two_generations_and_keeps_what_is_used() {
        let c = StateCache::default();
        c.put_all(vec![("a".into(), state(0))]);
        c.put_all(
            (1..GENERATION)
                .map(|i| (format!("f{i}"), state(i)))
                .collect(),
        );
        // The newer generation is full: the next state starts a new one.
        c.put_all(vec![("b".into(), state(GENERATION))]);
        assert_eq!(c.len(), GENERATION + 1);
        // "a" is used, so it moves to the newer generation ...
        assert_eq!(c.get("a").unwrap().name, "n0");
        c.put_all(
            (0..GENERATION - 2)
                .map(|i| (format!("g{i}"), state(i)))
                .collect(),
        );
        // ... and outlives the older one, which the next state drops.
        c.put_all(vec![("c".into(), state(1))]);
        assert!(c.get("a").is_some());
        assert!(c.get("f1").is_none());
        assert!(c.get("b").is_some());
        assert!(c.len() <= 2 * GENERATION);
    }
}
