//! Small reads for operations and diagnostics: whether the database
//! answers, and how many claims it holds.

use sqlx::PgPool;

/// Runs the smallest statement: the database answers.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Claims stored, of every NIC.
pub async fn claim_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM claims")
        .fetch_one(pool)
        .await
}
