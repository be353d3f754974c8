//! Session advisory locks, held on a connection of their own: one holder
//! of a key at a time, across processes, until it unlocks or its connection
//! closes.

use sqlx::PgConnection;

/// Takes the lock `key` on `conn` if no other session holds it; whether
/// it did.
pub async fn try_lock(conn: &mut PgConnection, key: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(conn)
        .await
}

/// Releases the lock `key` that `conn` holds.
pub async fn unlock(conn: &mut PgConnection, key: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(conn)
        .await
        .map(|_| ())
}
