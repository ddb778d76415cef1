//! Full-text search over messages (tantivy); the user directory is `veche_core::directory`.
//!
//! The index lives in `<data>/search/` and is only a cache of the message log: the database
//! is the truth. An indexer task follows `search_queue` (filled by triggers in the same
//! transactions that write, edit or delete messages) and commits its position into the
//! index's own commit payload, so a crash anywhere leaves a position that is re-applied from
//! (re-applying is idempotent: delete by id, then add). An index that is missing, unreadable
//! or of another schema is rebuilt from the messages while search keeps answering from what
//! there is.
//!
//! A query is answered from the index, then every hit passes the same authorization as
//! history, against the database as it is now: a message the caller cannot read now, or one
//! deleted since it was indexed, is never returned. Snippets are cut from the current text.

pub(crate) mod analyzer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use veche_protocol::Timestamp;
use veche_protocol::discussions::{SearchHit, SearchQuery};

pub(crate) use analyzer::Analyzer;

use veche_core::discussions::{Caller, DiscussionError, Discussions};
use veche_protocol::Reply;
use veche_store::{IndexRow, Store, StoreError};

/// Messages taken in per commit, at most (a commit flushes a segment: fewer, larger commits
/// index faster).
const BATCH: i64 = 10_000;
/// The indexer's rhythm: after looking at the queue it waits this long before the next look,
/// so that at a steady low rate the messages of this interval share one commit (and one
/// small segment to merge) instead of paying one each. New messages are searchable within
/// about this long.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// How long the indexer sleeps when nothing rings its doorbell: every write of messages goes
/// through the sequencer, which rings it after each commit, so this is only a safety net.
const IDLE_LOOK: Duration = Duration::from_secs(60);
/// The most candidates one query reads before giving up on filling a page.
const MAX_CANDIDATES: usize = 20_000;
/// The index writer's memory budget.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SearchError {
    #[error("search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("search index folder: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the search index is not ready")]
    Unavailable,
}

impl From<tantivy::directory::error::OpenDirectoryError> for SearchError {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        Self::Io(std::io::Error::other(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    discussion: Field,
    kind: Field,
    author: Field,
    object: Field,
    at: Field,
    text: Field,
    /// `1` for a message with files attached.
    has_file: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        discussion: b.add_text_field("discussion", STRING | STORED),
        kind: b.add_text_field("kind", STRING),
        author: b.add_text_field("author", STRING),
        object: b.add_text_field("object", STRING),
        at: b.add_i64_field("at", INDEXED | FAST),
        text: b.add_text_field("text", text),
        has_file: b.add_text_field("has_file", STRING),
    };
    (b.build(), fields)
}

/// An open index with its reader and, once something was written, its writer.
struct Opened {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    writer: Mutex<Option<IndexWriter>>,
}

impl Opened {
    /// Closes the writer, if any, after its merges finish (they write into the folder).
    async fn close_writer(self: &Arc<Self>) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.wait_merging_threads()).await;
        }
    }
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opened")
    }
}

fn open_index(path: &Path) -> Result<Opened, SearchError> {
    std::fs::create_dir_all(path)?;
    let (schema, fields) = schema();
    let index = Index::open_or_create(MmapDirectory::open(path)?, schema)?;
    index.tokenizers().register(
        analyzer::NAME,
        TextAnalyzer::builder(Analyzer::default()).build(),
    );
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok(Opened {
        index,
        reader,
        fields,
        writer: Mutex::new(None),
    })
}

/// The position an index's last commit recorded: `Some(queue id)`, or `None` for an index
/// never built.
fn committed_cursor(index: &Index) -> Option<i64> {
    index
        .load_metas()
        .ok()
        .and_then(|m| m.payload)
        .and_then(|p| p.parse().ok())
}

/// The search service.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    folder: PathBuf,
    analyzer: Analyzer,
    current: RwLock<Option<Arc<Opened>>>,
    /// Rung by the sequencer after each commit that changed something, and by a reindex
    /// request.
    wake: Arc<Notify>,
    reindex: std::sync::atomic::AtomicBool,
    /// Opened for an offline admin command: no indexer runs.
    offline: bool,
    /// Complete rebuilds so far (for tests and benchmarks).
    rebuilds: std::sync::atomic::AtomicU64,
}

impl Search {
    /// Opens the index in `<data>/search` (or notes that it must be built). `doorbell` is
    /// rung whenever messages may have changed (see [`veche_core::discussions::Outlets`]).
    pub(crate) fn new(store: Store, data: &Path, offline: bool, doorbell: Arc<Notify>) -> Self {
        let folder = data.join("search");
        // Nothing is created here: an offline admin command, perhaps run as another user,
        // must not leave files the node cannot write. The indexer builds what is missing.
        let current = if !offline && folder.join("meta.json").exists() {
            match open_index(&folder) {
                Ok(o) if committed_cursor(&o.index).is_some() => Some(Arc::new(o)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "the search index cannot be opened; it will be rebuilt");
                    None
                }
            }
        } else {
            None
        };
        Self {
            inner: Arc::new(Inner {
                store,
                folder,
                analyzer: Analyzer::default(),
                current: RwLock::new(current),
                wake: doorbell,
                reindex: std::sync::atomic::AtomicBool::new(false),
                offline,
                rebuilds: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Asks the indexer to rebuild the index from the messages; search keeps answering from
    /// the old one until the new one is complete.
    /// Without a running indexer (an offline admin command), the index folder is removed
    /// and the next start builds it.
    pub(crate) fn request_reindex(&self) -> Result<(), SearchError> {
        use std::sync::atomic::Ordering;
        if self.inner.offline {
            if self.inner.folder.exists() {
                std::fs::remove_dir_all(&self.inner.folder)?;
            }
            return Ok(());
        }
        self.inner.reindex.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Runs the indexer until `stop`.
    pub(crate) fn spawn_indexer(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run(stop).await })
    }

    /// Complete rebuilds since the node started.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn rebuilds(&self) -> u64 {
        self.inner
            .rebuilds
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether an index is open to answer searches (not so while the first one is built).
    pub(crate) fn is_ready(&self) -> bool {
        self.inner.offline || self.opened().is_some()
    }

    fn opened(&self) -> Option<Arc<Opened>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn run(self, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let rebuild = self.opened().is_none()
                || self
                    .inner
                    .reindex
                    .swap(false, std::sync::atomic::Ordering::SeqCst);
            let result = if rebuild {
                self.rebuild(&stop).await
            } else {
                self.catch_up().await
            };
            let busy = match result {
                Ok(busy) => {
                    failures = 0;
                    busy
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "search indexing failed; retrying");
                    if rebuild || failures >= 5 {
                        // A rebuild is retried; an index that keeps failing is rebuilt.
                        self.inner
                            .reindex
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    false
                }
            };
            if busy {
                continue;
            }
            let looked = tokio::time::Instant::now();
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(IDLE_LOOK) => {}
            }
            // Whatever rings the doorbell until then is taken in by the same look.
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(looked + COMMIT_EVERY) => {}
            }
        }
        // The writer's lock is released before storage closes.
        if let Some(opened) = self.opened() {
            opened.close_writer().await;
        }
    }

    /// Takes in one batch of the queue; `true` if a full batch was found.
    async fn catch_up(&self) -> Result<bool, SearchError> {
        let opened = self.opened().ok_or(SearchError::Unavailable)?;
        let cursor = committed_cursor(&opened.index).unwrap_or(0);
        if cursor > self.inner.store.search().search_queue_end().await? {
            // The index is ahead of the database: it was restored or replaced. Queue ids
            // from now on would be skipped; start over.
            tracing::warn!("the search index is ahead of the database; rebuilding it");
            self.inner
                .reindex
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Ok(true);
        }
        let rows = self
            .inner
            .store
            .search()
            .search_queue_after(cursor, BATCH)
            .await?;
        let Some(last) = rows.last().map(|(id, _)| *id) else {
            return Ok(false);
        };
        let full = rows.len() as i64 == BATCH;
        self.apply(
            &opened,
            rows.into_iter().map(|(_, r)| r).collect(),
            last,
            true,
        )
        .await?;
        self.inner.store.search().prune_search_queue(last).await?;
        Ok(full)
    }

    /// Writes `rows` and commits with `cursor` as the recorded position.
    async fn apply(
        &self,
        opened: &Arc<Opened>,
        rows: Vec<IndexRow>,
        cursor: i64,
        replace: bool,
    ) -> Result<(), SearchError> {
        let target = opened.clone();
        let opened = opened.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), SearchError> {
            let mut slot = opened.writer.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(opened.index.writer(WRITER_MEMORY)?);
            }
            let writer = slot.as_mut().ok_or(SearchError::Unavailable)?;
            let f = opened.fields;
            for row in rows {
                if replace {
                    writer.delete_term(Term::from_field_text(f.id, &row.id));
                }
                if row.deleted {
                    continue;
                }
                let has_file = row.files.is_some();
                let text = searchable(row.text.as_deref(), row.files.as_deref());
                if text.trim().is_empty() {
                    continue;
                }
                let mut doc = TantivyDocument::default();
                doc.add_text(f.id, &row.id);
                doc.add_text(f.discussion, &row.discussion_id);
                doc.add_text(f.kind, &row.kind);
                doc.add_text(f.author, &row.author);
                if let Some(object) = &row.object {
                    doc.add_text(f.object, object);
                }
                doc.add_i64(f.at, row.created_at);
                doc.add_text(f.text, &text);
                if has_file {
                    doc.add_text(f.has_file, "1");
                }
                writer.add_document(doc)?;
            }
            let mut commit = writer.prepare_commit()?;
            commit.set_payload(&cursor.to_string());
            commit.commit()?;
            opened.reader.reload()?;
            Ok(())
        })
        .await
        .map_err(|e| SearchError::Io(std::io::Error::other(e.to_string())))
        .and_then(|r| r);
        if result.is_err() {
            // Whatever the writer held is dropped; the next attempt starts from the last
            // commit with a new writer.
            target.close_writer().await;
        }
        result
    }

    /// Builds a new index from every message in a folder beside the current one, then puts
    /// it in place. Search answers from the old index meanwhile.
    async fn rebuild(&self, stop: &CancellationToken) -> Result<bool, SearchError> {
        let started = std::time::Instant::now();
        let fresh = self.inner.folder.with_extension("new");
        let _ = std::fs::remove_dir_all(&fresh);
        let building = Arc::new(open_index(&fresh)?);
        let result = self.build(&building, stop).await;
        // The new index's merges finish before its folder moves.
        building.close_writer().await;
        let Some(count) = result? else {
            return Ok(false);
        };
        drop(building);
        // The switch: the live index's writer closes (its merges write into its folder), the
        // folders swap, and the new index replaces the old in one step. Until then queries
        // use the old one, whose files stay readable through the rename.
        if let Some(current) = self.opened() {
            current.close_writer().await;
        }
        let old = self.inner.folder.with_extension("old");
        let _ = std::fs::remove_dir_all(&old);
        if self.inner.folder.exists() {
            std::fs::rename(&self.inner.folder, &old)?;
        }
        std::fs::rename(&fresh, &self.inner.folder)?;
        let reopened = Arc::new(open_index(&self.inner.folder)?);
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(reopened);
        let _ = std::fs::remove_dir_all(&old);
        self.inner
            .rebuilds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            messages = count,
            secs = started.elapsed().as_secs_f64(),
            "search index built"
        );
        Ok(true)
    }

    /// Writes every message into `building`; `None` if stopped on the way.
    async fn build(
        &self,
        building: &Arc<Opened>,
        stop: &CancellationToken,
    ) -> Result<Option<usize>, SearchError> {
        // Everything queued from here on is taken in after the switch.
        let cursor = self.inner.store.search().search_queue_end().await?;
        let mut after = 0;
        let mut count = 0usize;
        loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            let rows = self
                .inner
                .store
                .search()
                .messages_for_index(after, BATCH)
                .await?;
            let Some(last) = rows.last().map(|(rid, _)| *rid) else {
                break;
            };
            after = last;
            count += rows.len();
            // Not the final position yet: a crash now leaves a folder that is started over.
            self.apply(
                building,
                rows.into_iter().map(|(_, r)| r).collect(),
                -1,
                false,
            )
            .await?;
        }
        self.apply(building, Vec::new(), cursor, false).await?;
        Ok(Some(count))
    }

    /// Messages the caller may read now that match `q`, best first.
    pub(crate) async fn messages(
        &self,
        discussions: &Discussions,
        caller: &Caller,
        q: SearchQuery,
    ) -> Result<Reply, DiscussionError> {
        if q.query.trim().is_empty() || q.query.len() > 1000 {
            return Err(DiscussionError::BadRequest(
                "a search query is 1 to 1000 bytes".into(),
            ));
        }
        if q.limit == 0 || q.limit > 100 || q.offset > 10_000 {
            return Err(DiscussionError::BadRequest(
                "limit is 1 to 100 and offset at most 10000".into(),
            ));
        }
        let members = self
            .inner
            .store
            .search()
            .member_discussions(&caller.user)
            .await?;
        let readable = |d: String| {
            let this = discussions.clone();
            let caller = caller.clone();
            async move {
                match this.granted(&caller, &d).await {
                    Ok(_) => Ok(true),
                    Err(DiscussionError::Store(e)) => Err(e),
                    Err(_) => Ok(false),
                }
            }
        };
        let (hits, corrected_query, more) =
            self.query(&q, members, readable)
                .await
                .map_err(|e| match e {
                    SearchError::Store(e) => DiscussionError::Store(e),
                    SearchError::Unavailable => DiscussionError::NotReady(
                        "the search index is being built; try again shortly".into(),
                    ),
                    other => {
                        tracing::error!(error = %other, "search failed");
                        DiscussionError::NotReady("search failed; try again".into())
                    }
                })?;
        Ok(Reply::SearchResults {
            hits,
            corrected_query,
            more,
        })
    }

    /// Answers a query: hits the caller may read now, best first, one page.
    /// `readable` says whether the caller may read a discussion now (the authorization of
    /// history).
    pub(crate) async fn query<F, Fut>(
        &self,
        q: &SearchQuery,
        members_of: Vec<String>,
        mut readable: F,
    ) -> Result<(Vec<SearchHit>, Option<String>, bool), SearchError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, StoreError>>,
    {
        let mut decided = HashMap::new();
        let (hits, more) = self
            .query_once(q, &q.query, &members_of, &mut readable, &mut decided)
            .await?;
        if hits.is_empty()
            && let Some(switched) = analyzer::switch_layout(&q.query)
        {
            let (hits, more) = self
                .query_once(q, &switched, &members_of, &mut readable, &mut decided)
                .await?;
            if !hits.is_empty() {
                return Ok((hits, Some(switched), more));
            }
        }
        Ok((hits, None, more))
    }

    async fn query_once<F, Fut>(
        &self,
        q: &SearchQuery,
        text: &str,
        members_of: &[String],
        readable: &mut F,
        decided: &mut HashMap<String, bool>,
    ) -> Result<(Vec<SearchHit>, bool), SearchError>
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<bool, StoreError>>,
    {
        let opened = self.opened().ok_or(SearchError::Unavailable)?;
        let f = opened.fields;
        let mut terms: Vec<String> = self
            .inner
            .analyzer
            .tokens(text)
            .into_iter()
            .map(|t| t.text)
            .collect();
        terms.sort();
        terms.dedup();
        if terms.is_empty() {
            return Ok((Vec::new(), false));
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(
            terms
                .iter()
                .map(|t| {
                    (
                        Occur::Must,
                        Box::new(TermQuery::new(
                            Term::from_field_text(f.text, t),
                            IndexRecordOption::WithFreqs,
                        )) as Box<dyn Query>,
                    )
                })
                .collect(),
        ));
        // Only the words score; filters do not (an object discussion is not a better hit).
        let filter = |q: Box<dyn Query>| -> (Occur, Box<dyn Query>) {
            (Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0)))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text_query.box_clone())];
        // Dialogs and groups the caller is in, or any object discussion (those are decided
        // per hit below).
        clauses.push(filter(Box::new(BooleanQuery::new(vec![
            (
                Occur::Should,
                Box::new(TermSetQuery::new(
                    members_of
                        .iter()
                        .map(|d| Term::from_field_text(f.discussion, d)),
                )) as Box<dyn Query>,
            ),
            (
                Occur::Should,
                Box::new(TermQuery::new(
                    Term::from_field_text(f.kind, "object"),
                    IndexRecordOption::Basic,
                )),
            ),
        ]))));
        let term = |field: Field, value: &str| -> (Occur, Box<dyn Query>) {
            filter(Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            )))
        };
        if let Some(d) = &q.discussion {
            clauses.push(term(f.discussion, d));
        }
        if let Some(a) = &q.author {
            clauses.push(term(f.author, a));
        }
        if let Some(o) = &q.object {
            let key = format!("{}/{}/{}", o.application, o.object_type, o.object_id);
            clauses.push(term(f.object, &key));
        }
        if q.has_file {
            clauses.push(term(f.has_file, "1"));
        }
        if q.from.is_some() || q.to.is_some() {
            use std::ops::Bound;
            let lower = q.from.map_or(Bound::Unbounded, |t| {
                Bound::Included(Term::from_field_i64(f.at, t.as_millis()))
            });
            let upper = q.to.map_or(Bound::Unbounded, |t| {
                Bound::Excluded(Term::from_field_i64(f.at, t.as_millis()))
            });
            clauses.push(filter(Box::new(RangeQuery::new(lower, upper))));
        }
        let query = BooleanQuery::new(clauses);
        let wanted = q.offset as usize + q.limit.clamp(1, 100) as usize;
        let mut fetch = (wanted * 2 + 20).min(MAX_CANDIDATES);
        let members: std::collections::HashSet<&str> =
            members_of.iter().map(String::as_str).collect();
        loop {
            let searcher = opened.reader.searcher();
            let candidates: Vec<(String, String)> = {
                let top = searcher.search(&query, &TopDocs::with_limit(fetch))?;
                let mut out = Vec::with_capacity(top.len());
                for (_, addr) in top {
                    let doc: TantivyDocument = searcher.doc(addr)?;
                    let id = doc.get_first(f.id).and_then(|v| v.as_str()).unwrap_or("");
                    let d = doc
                        .get_first(f.discussion)
                        .and_then(|v| v.as_str())
                        .unwrap_or("");
                    out.push((id.to_owned(), d.to_owned()));
                }
                out
            };
            let exhausted = candidates.len() < fetch;
            // The caller may read the discussion now: a member of a dialog or group just
            // read from the database, else asked (once per discussion).
            let mut allowed = Vec::new();
            for (id, d) in candidates {
                let ok = if members.contains(d.as_str()) {
                    true
                } else {
                    match decided.get(&d) {
                        Some(ok) => *ok,
                        None => {
                            let ok = readable(d.clone()).await?;
                            decided.insert(d.clone(), ok);
                            ok
                        }
                    }
                };
                if ok {
                    allowed.push(id);
                }
            }
            // As the messages are now: deleted ones go, snippets come from the current text.
            let rows = self.inner.store.search().hits(&allowed).await?;
            let live: Vec<_> = rows
                .into_iter()
                .filter(|r| !r.deleted && r.text.is_some())
                .collect();
            if live.len() > wanted || exhausted || fetch >= MAX_CANDIDATES {
                let more = live.len() > wanted || !exhausted;
                let generator = SnippetGenerator::create(&searcher, &*text_query, f.text).ok();
                let hits = live
                    .into_iter()
                    .skip(q.offset as usize)
                    .take(q.limit.clamp(1, 100) as usize)
                    .map(|r| {
                        let text = searchable(r.text.as_deref(), r.files.as_deref());
                        let snippet = generator
                            .as_ref()
                            .map(|g| g.snippet(&text).to_html())
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| escape(&text.chars().take(150).collect::<String>()));
                        SearchHit {
                            discussion: r.discussion_id,
                            message_id: r.id,
                            seq: u64::try_from(r.seq).unwrap_or(0),
                            author: r.author,
                            created_at: Timestamp(r.created_at),
                            snippet,
                        }
                    })
                    .collect();
                return Ok((hits, more));
            }
            fetch = (fetch * 4).min(MAX_CANDIDATES);
        }
    }
}

/// What a message is found by: its text and the names of its files.
fn searchable(text: Option<&str>, files: Option<&str>) -> String {
    let text = text.unwrap_or_default();
    match files {
        Some(names) if text.trim().is_empty() => names.to_owned(),
        Some(names) => format!("{text}\n{names}"),
        None => text.to_owned(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
