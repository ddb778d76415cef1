//! Files: blobs (contents, once per SHA-256), files, uploads in progress and attachments.

use super::{Batch, Files, StoreError};
use crate::db::{Tx, query, query_as, query_scalar};

/// A distinct content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BlobRow {
    pub sha256: String,
    pub size: i64,
    pub backend: String,
    pub mime: String,
    pub thumbnail: bool,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub created_at: i64,
}

/// A file with what its content is (from `blobs`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub name: String,
    pub size: i64,
    pub discussion_id: String,
    pub uploader: String,
    pub created_at: i64,
    pub attached: bool,
    pub sha256: String,
    pub backend: String,
    pub mime: String,
    pub thumbnail: bool,
    pub width: Option<i64>,
    pub height: Option<i64>,
    /// The linked node whose word the file is, until it has sent the content (`None`: an
    /// upload here, or proven).
    pub linked_from: Option<String>,
}

/// An upload in progress (or completed, with `file_id`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UploadRow {
    pub id: String,
    pub user_id: String,
    pub discussion_id: String,
    pub name: String,
    pub size: i64,
    pub sha256: String,
    pub confirmed: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub file_id: Option<String>,
}

/// A message a file is attached to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attachment {
    pub discussion_id: String,
    pub deleted: bool,
}

/// Blobs and their sizes on one backend.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct BackendUsage {
    pub backend: String,
    pub blobs: i64,
    pub bytes: i64,
}

/// Every column of `files f JOIN blobs b`, in `FileRow`'s order.
macro_rules! file_columns {
    () => {
        "f.id, f.name, f.size, f.discussion_id, f.uploader, f.created_at, f.attached, \
         b.sha256, b.backend, b.mime, b.thumbnail, b.width, b.height, f.linked_from"
    };
}

/// When a file `f` may be removed, taking the numbers of two placeholders: the unattached
/// cut-off, then the retention cut-off (`removable!(1, 2)` binds `$1` and `$2`).
/// A file that waits in a submission to another node's discussion is not removed as
/// unattached (retention still applies).
macro_rules! removable {
    ($unattached:literal, $retention:literal) => {
        concat!(
            "((f.attached AND NOT EXISTS (SELECT 1 FROM message_files a WHERE a.file_id = f.id)) \
              OR (NOT f.attached AND f.created_at < $",
            $unattached,
            " AND NOT ",
            submitted!(),
            ") OR f.created_at < $",
            $retention,
            ")"
        )
    };
}

/// Whether a file `f` waits in a submission to another node's discussion: listed with it,
/// neither refused nor stamped yet.
macro_rules! submitted {
    () => {
        "EXISTS (SELECT 1 FROM fed_pending_files pf JOIN fed_pending p ON p.event_id = pf.event_id \
          WHERE pf.file_id = f.id AND p.refused IS NULL \
          AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = p.message_id))"
    };
}

/// `blobs.backend` of a content known here only from a linked node's message.
pub const REMOTE_BACKEND: &str = "remote";

/// Every column of `blobs`, in `BlobRow`'s order.
macro_rules! blob_columns {
    () => {
        "sha256, size, backend, mime, thumbnail, width, height, created_at"
    };
}

/// Every column of `uploads`, in `UploadRow`'s order.
macro_rules! upload_columns {
    () => {
        "id, user_id, discussion_id, name, size, sha256, confirmed, created_at, expires_at, \
         file_id"
    };
}

impl Files<'_> {
    /// Bytes of stored contents per backend (`fs`, `plugin:<id>`), for the metrics.
    pub async fn bytes_by_backend(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(query_as::<(String, i64)>(
            "SELECT backend, CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs GROUP BY backend",
        )
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Bytes `user` keeps in files and has reserved for uploads in progress.
    pub async fn file_usage(&self, user: &str) -> Result<u64, StoreError> {
        let used: i64 = query_scalar(
            "SELECT CAST(COALESCE((SELECT SUM(size) FROM files WHERE uploader = $1), 0) \
             + COALESCE((SELECT SUM(size) FROM uploads WHERE user_id = $1 AND file_id IS NULL), 0) \
             AS BIGINT)",
        )
        .bind(user)
        .fetch_one(&self.db.read)
        .await?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Records a new upload, if the user's usage with it stays within `quota` (0: no limit);
    /// returns whether it was recorded. Checked and written in one transaction, so that two
    /// uploads cannot both take the last bytes.
    pub async fn insert_upload(&self, u: &UploadRow, quota: u64) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        if quota > 0 {
            let used: i64 = query_scalar(
                "SELECT CAST(COALESCE((SELECT SUM(size) FROM files WHERE uploader = $1), 0) \
                 + COALESCE((SELECT SUM(size) FROM uploads \
                             WHERE user_id = $1 AND file_id IS NULL), 0) AS BIGINT)",
            )
            .bind(&u.user_id)
            .fetch_one(&mut tx)
            .await?;
            let after = u64::try_from(used).unwrap_or(0) + u64::try_from(u.size).unwrap_or(0);
            if after > quota {
                return Ok(false);
            }
        }
        query(concat!(
            "INSERT INTO uploads (",
            upload_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&u.id)
        .bind(&u.user_id)
        .bind(&u.discussion_id)
        .bind(&u.name)
        .bind(u.size)
        .bind(&u.sha256)
        .bind(u.confirmed)
        .bind(u.created_at)
        .bind(u.expires_at)
        .bind(&u.file_id)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            upload_columns!(),
            " FROM uploads WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// Records that the staging file holds `confirmed` bytes, durably.
    pub async fn set_upload_confirmed(&self, id: &str, confirmed: i64) -> Result<(), StoreError> {
        query("UPDATE uploads SET confirmed = $1 WHERE id = $2 AND file_id IS NULL")
            .bind(confirmed)
            .bind(id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        let done = query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.db.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Uploads not completed by `now`, oldest first.
    pub async fn expired_uploads(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT id FROM uploads WHERE expires_at < $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn blob(&self, sha256: &str) -> Result<Option<BlobRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            blob_columns!(),
            " FROM blobs WHERE sha256 = $1"
        ))
        .bind(sha256)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// Completes an upload: the blob (unless its content is already stored, which `blob`
    /// then is `None`), the file, and the upload's link to it, in one transaction. Returns
    /// `false` if the blob was expected to exist and does not (it was removed meanwhile).
    pub async fn complete_upload(
        &self,
        upload: &str,
        file: &FileRow,
        blob: Option<&BlobRow>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        match blob {
            Some(b) => {
                // A content recorded only as held at a linked node is here now.
                insert_blob(&mut tx, b, true).await?;
            }
            None => {
                let exists: Option<i64> = query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM blobs WHERE sha256 = $1 AND backend <> $2",
                )
                .bind(&file.sha256)
                .bind(REMOTE_BACKEND)
                .fetch_optional(&mut tx)
                .await?;
                if exists.is_none() {
                    return Ok(false);
                }
            }
        }
        query(
            "INSERT INTO files (id, sha256, name, size, discussion_id, uploader, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&file.id)
        .bind(&file.sha256)
        .bind(&file.name)
        .bind(file.size)
        .bind(&file.discussion_id)
        .bind(&file.uploader)
        .bind(file.created_at)
        .execute(&mut tx)
        .await?;
        query("UPDATE uploads SET file_id = $1, confirmed = size WHERE id = $2")
            .bind(&file.id)
            .bind(upload)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn file(&self, id: &str) -> Result<Option<FileRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// The messages a file is attached to.
    pub async fn file_attachments(&self, id: &str) -> Result<Vec<Attachment>, StoreError> {
        Ok(query_as(
            "SELECT m.discussion_id, m.deleted FROM message_files a \
             JOIN messages m ON m.id = a.message_id WHERE a.file_id = $1",
        )
        .bind(id)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The files attached to a message, in order.
    pub async fn message_files(&self, message: &str) -> Result<Vec<FileRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM message_files a JOIN files f ON f.id = a.file_id \
              JOIN blobs b ON b.sha256 = f.sha256 \
              WHERE a.message_id = $1 ORDER BY a.position"
        ))
        .bind(message)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Files to remove: attached once and no longer (their messages were deleted), never
    /// attached and uploaded before `unattached_before`, or uploaded before
    /// `retention_before` (retention; `None`: kept).
    pub async fn removable_files(
        &self,
        unattached_before: i64,
        retention_before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(concat!(
            "SELECT f.id FROM files f WHERE ",
            removable!(1, 2),
            " LIMIT $3"
        ))
        .bind(unattached_before)
        .bind(retention_before.unwrap_or(i64::MIN))
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Removes these files (with their attachments and uploads) if they are still removable
    /// by the same rule: a file attached meanwhile stays. Returns how many went.
    pub async fn delete_files(
        &self,
        ids: &[String],
        unattached_before: i64,
        retention_before: Option<i64>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let mut removed = 0;
        for id in ids {
            let done = query(concat!(
                "DELETE FROM files WHERE id = $1 AND id IN (SELECT f.id FROM files f WHERE ",
                removable!(2, 3),
                ")"
            ))
            .bind(id)
            .bind(unattached_before)
            .bind(retention_before.unwrap_or(i64::MIN))
            .execute(&mut tx)
            .await?;
            removed += usize::try_from(done.rows_affected()).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Blobs no file refers to.
    pub async fn orphan_blobs(&self, limit: i64) -> Result<Vec<BlobRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            blob_columns!(),
            " FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = b.sha256) \
              LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Removes a blob's row if still no file refers to it; returns the backend it was on.
    pub async fn delete_orphan_blob(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        Ok(query_scalar(
            "DELETE FROM blobs WHERE sha256 = $1 \
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = blobs.sha256) \
             RETURNING backend",
        )
        .bind(sha256)
        .fetch_optional(&self.db.write)
        .await?)
    }

    /// Blobs not on `backend`, in hash order after `after`.
    pub async fn blobs_elsewhere(
        &self,
        backend: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<BlobRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            blob_columns!(),
            " FROM blobs WHERE backend <> $1 AND backend <> $2 AND sha256 > $3 \
              ORDER BY sha256 LIMIT $4"
        ))
        .bind(backend)
        .bind(REMOTE_BACKEND)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Moves a blob's row from one backend to another; `false` if it is gone or was not on
    /// `from`.
    pub async fn move_blob(&self, sha256: &str, from: &str, to: &str) -> Result<bool, StoreError> {
        let done = query("UPDATE blobs SET backend = $1 WHERE sha256 = $2 AND backend = $3")
            .bind(to)
            .bind(sha256)
            .bind(from)
            .execute(&self.db.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records the backend new contents go to, with its audit record, in one transaction.
    pub async fn set_files_backend(
        &self,
        key: &str,
        backend: &str,
        audit: &super::AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(backend)
        .execute(&mut tx)
        .await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A file of `discussion` with the content `sha256` that the peer of `link` (the node
    /// `peer`) may fetch. The peer takes part in the discussion (it is its home:
    /// `peer_is_home`, or the discussion is shared over the link), did not upload the file
    /// itself, and the file is attached to a message not deleted, or waits in a submission
    /// (see [`Batch::fed_pending_files`]). Proven files come first.
    pub async fn fed_servable_file(
        &self,
        link: &str,
        peer: &str,
        peer_is_home: bool,
        discussion: &str,
        sha256: &str,
    ) -> Result<Option<FileRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files f JOIN blobs b ON b.sha256 = f.sha256 \
              WHERE f.sha256 = $1 AND f.discussion_id = $2 \
              AND substr(f.uploader, instr(f.uploader, '@') + 1) <> $3 \
              AND ($4 OR EXISTS (SELECT 1 FROM fed_shares s JOIN fed_links l ON l.link = s.link \
                   WHERE s.discussion_id = f.discussion_id AND s.link = $5 AND l.state = 'active')) \
              AND (EXISTS (SELECT 1 FROM message_files a JOIN messages m ON m.id = a.message_id \
                   WHERE a.file_id = f.id AND NOT m.deleted) OR ",
            submitted!(),
            ") ORDER BY f.linked_from IS NULL DESC LIMIT 1"
        ))
        .bind(sha256)
        .bind(discussion)
        .bind(peer)
        .bind(peer_is_home)
        .bind(link)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// Files of discussions homed at `node` (this node) that a linked node named and has not
    /// sent yet, attached to messages not deleted, oldest first, but for those in `skip`.
    pub async fn fed_unproven_at_home(
        &self,
        node: &str,
        skip: &[String],
        limit: i64,
    ) -> Result<Vec<FileRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM files f JOIN blobs b ON b.sha256 = f.sha256 \
              WHERE f.linked_from IS NOT NULL \
              AND substr(f.discussion_id, instr(f.discussion_id, '@') + 1) = $1 \
              AND f.id NOT IN (SELECT value FROM json_each($2)) \
              AND EXISTS (SELECT 1 FROM message_files a JOIN messages m ON m.id = a.message_id \
                   WHERE a.file_id = f.id AND NOT m.deleted) \
              ORDER BY f.created_at LIMIT $3"
        ))
        .bind(node)
        .bind(super::json_param(&skip)?)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Records that the linked node `source` sent the content of `file` for its discussion:
    /// the files of that discussion it named with that content and size are proven, and the
    /// content, if it was recorded only as held at a linked node, is now stored on
    /// `blob.backend` (`blob` is `None` when it was held here already).
    pub async fn fed_content_proven(
        &self,
        file: &FileRow,
        source: &str,
        blob: Option<&BlobRow>,
    ) -> Result<(), StoreError> {
        let sha256 = &file.sha256;
        let mut tx = self.db.write.begin().await?;
        if let Some(blob) = blob {
            query(
                "UPDATE blobs SET size = $1, backend = $2, mime = $3, thumbnail = $4, width = $5, \
                 height = $6 WHERE sha256 = $7 AND backend = $8",
            )
            .bind(blob.size)
            .bind(&blob.backend)
            .bind(&blob.mime)
            .bind(blob.thumbnail)
            .bind(blob.width)
            .bind(blob.height)
            .bind(sha256)
            .bind(REMOTE_BACKEND)
            .execute(&mut tx)
            .await?;
        }
        query(
            "UPDATE files SET linked_from = NULL \
             WHERE sha256 = $1 AND linked_from = $2 AND discussion_id = $3 AND size = $4",
        )
        .bind(sha256)
        .bind(source)
        .bind(&file.discussion_id)
        .bind(file.size)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Blobs and bytes per backend.
    pub async fn backend_usage(&self) -> Result<Vec<BackendUsage>, StoreError> {
        Ok(query_as(
            "SELECT backend, COUNT(*) AS blobs, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM blobs \
             GROUP BY backend ORDER BY backend",
        )
        .fetch_all(&self.db.read)
        .await?)
    }
}

impl Batch {
    /// A file's uploader, discussion and upload time, for attaching it.
    pub async fn file_owner(
        &mut self,
        id: &str,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        Ok(
            query_as("SELECT uploader, discussion_id, created_at FROM files WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut self.tx)
                .await?,
        )
    }

    /// Attaches files to a message, in order.
    pub async fn attach_files(
        &mut self,
        message: &str,
        files: &[String],
    ) -> Result<(), StoreError> {
        for (position, id) in files.iter().enumerate() {
            query("INSERT INTO message_files (message_id, file_id, position) VALUES ($1, $2, $3)")
                .bind(message)
                .bind(id)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .execute(&mut self.tx)
                .await?;
            query("UPDATE files SET attached = TRUE WHERE id = $1")
                .bind(id)
                .execute(&mut self.tx)
                .await?;
        }
        Ok(())
    }

    /// The files, with their contents, by id (inside the writing transaction); missing ones are
    /// left out.
    pub async fn files_by_id(&mut self, ids: &[String]) -> Result<Vec<FileRow>, StoreError> {
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<FileRow> = query_as(concat!(
                "SELECT ",
                file_columns!(),
                " FROM files f JOIN blobs b ON b.sha256 = f.sha256 WHERE f.id = $1"
            ))
            .bind(id)
            .fetch_optional(&mut self.tx)
            .await?;
            rows.extend(row);
        }
        Ok(rows)
    }

    /// Lists files with a submission to another node's discussion: they are kept, and served
    /// to that node, while the submission waits.
    pub async fn fed_pending_files(
        &mut self,
        event: &str,
        files: &[String],
    ) -> Result<(), StoreError> {
        for id in files {
            query("INSERT INTO fed_pending_files (event_id, file_id) VALUES ($1, $2)")
                .bind(event)
                .bind(id)
                .execute(&mut self.tx)
                .await?;
        }
        Ok(())
    }

    /// Records a file a linked node's message carries (`file.linked_from` names the node
    /// whose word it is, if not proven). Its content is recorded as waiting at a linked node
    /// (`blob.backend` is [`REMOTE_BACKEND`]) unless it is known here already.
    pub async fn record_linked_file(
        &mut self,
        file: &FileRow,
        blob: &BlobRow,
    ) -> Result<(), StoreError> {
        insert_blob(&mut self.tx, blob, false).await?;
        query(
            "INSERT INTO files (id, sha256, name, size, discussion_id, uploader, created_at, \
             linked_from) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&file.id)
        .bind(&file.sha256)
        .bind(&file.name)
        .bind(file.size)
        .bind(&file.discussion_id)
        .bind(&file.uploader)
        .bind(file.created_at)
        .bind(&file.linked_from)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// Whether this node's pending submission `event` lists a file with the content `sha256`
    /// (its own user's upload, coming back stamped).
    pub async fn fed_submitted_content(
        &mut self,
        event: &str,
        sha256: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM fed_pending_files pf JOIN files f ON f.id = pf.file_id \
             WHERE pf.event_id = $1 AND f.sha256 = $2",
        )
        .bind(event)
        .bind(sha256)
        .fetch_optional(&mut self.tx)
        .await?;
        Ok(found.is_some())
    }

    /// The files attached to a message, in order (inside the writing transaction).
    pub async fn message_files(&mut self, message: &str) -> Result<Vec<FileRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            file_columns!(),
            " FROM message_files a JOIN files f ON f.id = a.file_id \
              JOIN blobs b ON b.sha256 = f.sha256 \
              WHERE a.message_id = $1 ORDER BY a.position"
        ))
        .bind(message)
        .fetch_all(&mut self.tx)
        .await?)
    }
}

/// Records a content; if it is recorded already, it stays as it is, unless `take_over_remote`
/// and it was recorded only as held at a linked node (it is here now, as `b` says).
async fn insert_blob(conn: &mut Tx, b: &BlobRow, take_over_remote: bool) -> Result<(), StoreError> {
    query(concat!(
        "INSERT INTO blobs (",
        blob_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sha256) DO UPDATE SET \
         size = excluded.size, backend = excluded.backend, mime = excluded.mime, \
         thumbnail = excluded.thumbnail, width = excluded.width, \
         height = excluded.height WHERE $9 AND blobs.backend = $10"
    ))
    .bind(&b.sha256)
    .bind(b.size)
    .bind(&b.backend)
    .bind(&b.mime)
    .bind(b.thumbnail)
    .bind(b.width)
    .bind(b.height)
    .bind(b.created_at)
    .bind(take_over_remote)
    .bind(REMOTE_BACKEND)
    .execute(conn)
    .await?;
    Ok(())
}
