//! Config versions (immutable rows), their tags, approvals and validation
//! reports.

use super::{Conn, StoreResult, Tx, flag};
use sqlx::Row;

/// A version without its content (history listings).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub config_id: String,
    pub revision: i64,
    pub version: String,
    pub checksum: String,
    pub size_bytes: i64,
    pub author: String,
    pub message: Option<String>,
    pub rollback_of: Option<String>,
    pub breaking: i64,
    pub created_at: i64,
    pub approved_by: Option<String>,
    pub approved_at: Option<i64>,
    pub signature: Option<String>,
    pub signing_key_id: Option<String>,
}

/// A version with its content.
#[derive(Debug, Clone)]
pub struct VersionWithContent {
    pub meta: VersionRow,
    /// The document as stored (compact JSON).
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub id: &'a str,
    pub config_id: &'a str,
    pub revision: i64,
    pub version: &'a str,
    pub content: &'a str,
    pub checksum: &'a str,
    pub size_bytes: i64,
    pub author: &'a str,
    pub message: Option<&'a str>,
    pub rollback_of: Option<&'a str>,
    pub breaking: bool,
    pub created_at: i64,
    pub signature: &'a str,
    pub signing_key_id: &'a str,
}

macro_rules! version_columns {
    () => {
        "v.id, v.config_id, v.revision, v.version, v.checksum, v.size_bytes, v.author, \
         v.message, v.rollback_of, v.breaking, v.created_at, a.approved_by, a.approved_at, \
         v.signature, v.signing_key_id"
    };
}

macro_rules! version_from {
    () => {
        " FROM config_versions v LEFT JOIN version_approvals a \
          ON a.config_id = v.config_id AND a.revision = v.revision "
    };
}

/// `SELECT` of a version with its content, then `$where`.
macro_rules! select_with_content {
    ($where:literal) => {
        concat!(
            "SELECT ",
            version_columns!(),
            ", v.content",
            version_from!(),
            $where
        )
    };
}

/// Runs a bound [`select_with_content!`] query for at most one version.
async fn one_with_content(
    conn: &mut Conn,
    query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> StoreResult<Option<VersionWithContent>> {
    query
        .fetch_optional(&mut **conn)
        .await?
        .map(with_content)
        .transpose()
}

fn with_content(row: sqlx::any::AnyRow) -> StoreResult<VersionWithContent> {
    use sqlx::FromRow;
    Ok(VersionWithContent {
        content: row.try_get("content")?,
        meta: VersionRow::from_row(&row)?,
    })
}

pub async fn insert(tx: &mut Tx, version: &NewVersion<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO config_versions (id, config_id, revision, version, content, checksum, \
         size_bytes, author, message, rollback_of, breaking, created_at, signature, signing_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(version.id)
    .bind(version.config_id)
    .bind(version.revision)
    .bind(version.version)
    .bind(version.content)
    .bind(version.checksum)
    .bind(version.size_bytes)
    .bind(version.author)
    .bind(version.message)
    .bind(version.rollback_of)
    .bind(flag(version.breaking))
    .bind(version.created_at)
    .bind(version.signature)
    .bind(version.signing_key_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest version of a config, with content.
pub async fn latest(conn: &mut Conn, config_id: &str) -> StoreResult<Option<VersionWithContent>> {
    let query = sqlx::query(select_with_content!(
        "WHERE v.config_id = $1 ORDER BY v.revision DESC LIMIT 1"
    ))
    .bind(config_id);
    one_with_content(conn, query).await
}

/// One version by its semver label, with content.
pub async fn by_label(
    conn: &mut Conn,
    config_id: &str,
    version: &str,
) -> StoreResult<Option<VersionWithContent>> {
    let query = sqlx::query(select_with_content!(
        "WHERE v.config_id = $1 AND v.version = $2"
    ))
    .bind(config_id)
    .bind(version);
    one_with_content(conn, query).await
}

/// History, newest first, below `before_revision` when paging.
pub async fn list(
    conn: &mut Conn,
    config_id: &str,
    before_revision: Option<i64>,
    limit: i64,
) -> StoreResult<Vec<VersionRow>> {
    Ok(sqlx::query_as::<_, VersionRow>(concat!(
        "SELECT ",
        version_columns!(),
        version_from!(),
        "WHERE v.config_id = $1 AND ($2 IS NULL OR v.revision < $2) \
         ORDER BY v.revision DESC LIMIT $3"
    ))
    .bind(config_id)
    .bind(before_revision)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// Tags of the given revisions, as `(revision, tag)` in tag order.
pub async fn tags(
    conn: &mut Conn,
    config_id: &str,
    revisions: &[i64],
) -> StoreResult<Vec<(i64, String)>> {
    let (Some(low), Some(high)) = (revisions.iter().min(), revisions.iter().max()) else {
        return Ok(Vec::new());
    };
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT revision, tag FROM version_tags WHERE config_id = $1 \
         AND revision >= $2 AND revision <= $3 ORDER BY revision, tag",
    )
    .bind(config_id)
    .bind(*low)
    .bind(*high)
    .fetch_all(&mut **conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(revision, _)| revisions.contains(revision))
        .collect())
}

/// Replaces the tag set of one version.
pub async fn replace_tags(
    tx: &mut Tx,
    config_id: &str,
    revision: i64,
    tags: &[String],
    by: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM version_tags WHERE config_id = $1 AND revision = $2")
        .bind(config_id)
        .bind(revision)
        .execute(&mut **tx)
        .await?;
    for tag in tags {
        sqlx::query(
            "INSERT INTO version_tags (config_id, revision, tag, added_by, added_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(config_id)
        .bind(revision)
        .bind(tag)
        .bind(by)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn approve(
    tx: &mut Tx,
    config_id: &str,
    revision: i64,
    by: &str,
    at: i64,
    comment: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO version_approvals (config_id, revision, approved_by, approved_at, comment) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(config_id)
    .bind(revision)
    .bind(by)
    .bind(at)
    .bind(comment)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportRow {
    pub revision: i64,
    pub report: String,
    pub created_by: String,
    pub created_at: i64,
}

pub async fn insert_report(
    tx: &mut Tx,
    config_id: &str,
    revision: i64,
    valid: bool,
    report_json: &str,
    by: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO validation_reports (id, config_id, revision, valid, report, created_by, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(config_id)
    .bind(revision)
    .bind(flag(valid))
    .bind(report_json)
    .bind(by)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The newest report stored for a version.
pub async fn latest_report(
    conn: &mut Conn,
    config_id: &str,
    revision: i64,
) -> StoreResult<Option<ReportRow>> {
    Ok(sqlx::query_as::<_, ReportRow>(
        "SELECT revision, report, created_by, created_at FROM validation_reports \
         WHERE config_id = $1 AND revision = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(config_id)
    .bind(revision)
    .fetch_optional(&mut **conn)
    .await?)
}

/// `(id, config name, revision, checksum)` of versions without a signature.
pub async fn unsigned(conn: &mut Conn) -> StoreResult<Vec<(String, String, i64, String)>> {
    Ok(sqlx::query_as(
        "SELECT v.id, c.name, v.revision, v.checksum FROM config_versions v \
         JOIN configs c ON c.id = v.config_id WHERE v.signature IS NULL ORDER BY v.id",
    )
    .fetch_all(&mut **conn)
    .await?)
}

/// A version as the one-off checksum upgrade reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredChecksum {
    pub id: String,
    pub config: String,
    pub revision: i64,
    pub content: String,
    pub checksum: String,
}

/// Up to `limit` versions after `after_id`, by id.
pub async fn checksums_after(
    conn: &mut Conn,
    after_id: &str,
    limit: i64,
) -> StoreResult<Vec<StoredChecksum>> {
    Ok(sqlx::query_as(
        "SELECT v.id, c.name AS config, v.revision, v.content, v.checksum FROM config_versions v \
         JOIN configs c ON c.id = v.config_id WHERE v.id > $1 ORDER BY v.id LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut **conn)
    .await?)
}

/// Replaces a version's checksum (and the signature over it) when it still
/// holds `old`: the one-off move to RFC 8785 checksums. The document does
/// not change. False when the row moved on meanwhile.
pub async fn upgrade_checksum(
    tx: &mut Tx,
    id: &str,
    old: &str,
    checksum: &str,
    signature: &str,
    key_id: &str,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE config_versions SET checksum = $1, signature = $2, signing_key_id = $3 \
         WHERE id = $4 AND checksum = $5",
    )
    .bind(checksum)
    .bind(signature)
    .bind(key_id)
    .bind(id)
    .bind(old)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fills the signature of a version that has none (it never replaces one).
pub async fn set_signature(
    tx: &mut Tx,
    id: &str,
    signature: &str,
    key_id: &str,
) -> StoreResult<()> {
    sqlx::query("UPDATE config_versions SET signature = $1, signing_key_id = $2 WHERE id = $3 AND signature IS NULL")
        .bind(signature)
        .bind(key_id)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `(id, content)` of versions whose stored content holds sealed secrets.
pub async fn with_sealed_content(
    conn: &mut Conn,
    envelope_prefix: &str,
) -> StoreResult<Vec<(String, String)>> {
    // The prefix is a fixed literal without LIKE wildcards except '$', which LIKE treats literally.
    Ok(
        sqlx::query_as("SELECT id, content FROM config_versions WHERE content LIKE $1 ORDER BY id")
            .bind(format!("%{envelope_prefix}%"))
            .fetch_all(&mut **conn)
            .await?,
    )
}

/// `(config id, stored text)` of every version holding a sealed value.
pub async fn sealed_content_by_config(
    conn: &mut Conn,
    envelope_prefix: &str,
) -> StoreResult<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT config_id, content FROM config_versions WHERE content LIKE $1 ORDER BY id",
    )
    .bind(format!("%{envelope_prefix}%"))
    .fetch_all(&mut **conn)
    .await?)
}

/// Replaces a version's stored text with the same document re-sealed under
/// another key: the one in-place write versions allow, because the document
/// (and so its checksum and signature) does not change. Only succeeds if
/// the content is still `expected`.
pub async fn replace_sealed_content(
    tx: &mut Tx,
    id: &str,
    expected: &str,
    content: &str,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE config_versions SET content = $1, size_bytes = $2 WHERE id = $3 AND content = $4",
    )
    .bind(content)
    .bind(content.len() as i64)
    .bind(id)
    .bind(expected)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One version by revision, with content.
pub async fn by_revision(
    conn: &mut Conn,
    config_id: &str,
    revision: i64,
) -> StoreResult<Option<VersionWithContent>> {
    let query = sqlx::query(select_with_content!(
        "WHERE v.config_id = $1 AND v.revision = $2"
    ))
    .bind(config_id)
    .bind(revision);
    one_with_content(conn, query).await
}
