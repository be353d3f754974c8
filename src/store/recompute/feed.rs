//! The change feed: one `claim_changes` row per write of claims, listing
//! the NICs whose claims changed, and a notification that wakes followers
//! (other replicas reload those NICs).

use sqlx::PgConnection;

use super::ClaimChanges;

/// The NIC key a feed entry lists for "a horizon moved" (followers reload
/// the horizons).
pub(in crate::store) const HORIZON_MOVED: &str = "";

/// The NICs a feed entry for `changes` lists: every NIC whose claims
/// changed, those that lost all of theirs included.
pub(super) fn changed_nics(changes: &ClaimChanges) -> Vec<String> {
    changes.by_nic.keys().cloned().collect()
}

/// Appends one entry listing `nics` to the change feed and notifies
/// followers; returns its sequence number (as the range the ingest wrote).
/// Nothing is written for no NICs.
pub(in crate::store) async fn feed(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<Option<(i64, i64)>> {
    if nics.is_empty() {
        return Ok(None);
    }
    let seq: i64 =
        sqlx::query_scalar("INSERT INTO claim_changes (nic_keys) VALUES ($1) RETURNING seq")
            .bind(nics)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("SELECT pg_notify('ipwho_claims', $1)")
        .bind(seq.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Some((seq, seq)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::PgPool;

    #[test]
    fn an_entry_lists_every_nic_whose_claims_changed() {
        let mut changes = ClaimChanges::default();
        changes.by_nic.insert("a".into(), Vec::new());
        changes.by_nic.insert("b".into(), Vec::new());
        let mut nics = changed_nics(&changes);
        nics.sort();
        assert_eq!(nics, vec!["a".to_string(), "b".to_string()]);
        assert!(changed_nics(&ClaimChanges::default()).is_empty());
    }

    #[sqlx::test(migrator = "crate::store::MIGRATOR")]
    async fn one_row_per_entry_and_none_for_no_nics(pool: PgPool) {
        let mut conn = pool.acquire().await.unwrap();
        assert_eq!(feed(&mut conn, &[]).await.unwrap(), None);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM claim_changes")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        let nics = vec!["b".to_string(), "a".to_string()];
        let (first, last) = feed(&mut conn, &nics).await.unwrap().unwrap();
        assert_eq!(first, last);
        let (next, _) = feed(&mut conn, &nics[..1]).await.unwrap().unwrap();
        assert!(next > first);
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT nic_keys FROM claim_changes WHERE seq = $1")
                .bind(first)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(stored, nics, "as given");
    }
}
