//! The one authorization function: who may see a discussion.
//!
//! Every read path (list, get, history, sync, edit history, clicks, watching) and every write
//! (in the sequencer) asks [`authorize`]. Someone it refuses learns nothing: callers answer
//! "discussion not found", exactly as for a discussion that does not exist.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use veche_protocol::discussions::{DiscussionKind, ObjectCard, ObjectRef};

use crate::inbox::Click;
use veche_store::{Batch, DiscussionRow, ObjectKey, ReaderAccess, Store, StoreError};

/// What a context provider decided for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
}

/// Application, object type, object id, user.
pub type AccessKey = (String, String, String, String);

/// The key of `user`'s access to `object`.
pub fn access_key(object: &ObjectRef, user: &str) -> AccessKey {
    (
        object.application.clone(),
        object.object_type.clone(),
        object.object_id.clone(),
        user.to_owned(),
    )
}

/// Context providers' answers obtained for one command before it reached the sequencer.
#[derive(Debug, Default, Clone)]
pub struct Decided(HashMap<AccessKey, Access>);

impl Decided {
    /// The answer for `key`, if one was obtained.
    pub fn get(&self, key: &AccessKey) -> Option<Access> {
        self.0.get(key).copied()
    }

    /// Records an answer.
    pub fn insert(&mut self, key: AccessKey, access: Access) {
        self.0.insert(key, access);
    }
}

/// What a command needs to know before the sequencer can apply it: what `users` may do with
/// `object`, whose type a context provider serves, with no answer at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The object.
    pub object: ObjectRef,
    /// The users.
    pub users: Vec<String>,
}

/// Why a context provider did not accept an object.
#[derive(Debug, thiserror::Error)]
pub enum InvalidObject {
    #[error("{kind} {id} does not exist")]
    Missing { kind: String, id: String },
    #[error("{kind} {id} is not valid: {why}")]
    Invalid {
        kind: String,
        id: String,
        why: String,
    },
    #[error("the {kind} provider is unavailable: {why}")]
    Unavailable { kind: String, why: String },
}

/// The plugin host as this layer sees it, without calls into a plugin: answers at hand (bots'
/// rights, answers decided before, the cache) and waking bots. The plugin host implements it;
/// this layer owns it, so discussions never import the host.
pub trait ProviderCache: Send + Sync + std::fmt::Debug {
    /// Whether a context provider serves `object_type`.
    fn serves(&self, object_type: &str) -> bool;
    /// Whether any bot is installed.
    fn has_bots(&self) -> bool;
    /// Whether any context provider is installed: only then may a command need answers that
    /// are not at hand ([`Undecided`]).
    fn has_providers(&self) -> bool;
    /// The plugin whose bot user is `user`.
    fn bot_plugin(&self, user: &str) -> Option<String>;
    /// What a bot may do with an object by its manifest, if `user` is a bot.
    fn bot_access(&self, object: &ObjectRef, user: &str) -> Option<Access>;
    /// Wakes the dispatchers of these plugins (after a batch queued messages for them).
    fn wake(&self, plugins: &[String]);
    /// What `users` may do with `object` as far as the answers at hand tell, one per user,
    /// `None` for a user not decided yet.
    fn answers_at_hand(
        &self,
        object: &ObjectRef,
        users: &[String],
        decided: &Decided,
    ) -> Vec<Option<Access>>;
}

/// The plugin host as the discussions service sees it: it may call context providers and
/// queue clicks, outside the sequencer.
pub trait Providers: ProviderCache {
    /// What `user` may do with `object`; `None` when no provider serves its type.
    fn object_access(&self, object: ObjectRef, user: String) -> BoxFuture<'static, Option<Access>>;
    /// Asks the providers what `undecided` needs; `decided` with the answers added.
    fn decide(&self, undecided: Undecided, decided: Decided) -> BoxFuture<'static, Decided>;
    /// How the object looks; `None` when no provider serves it or it failed.
    fn render(&self, object: ObjectRef) -> BoxFuture<'static, Option<ObjectCard>>;
    /// Whether the object exists, for its type's provider; `Ok` when none serves it.
    fn validate(&self, object: ObjectRef) -> BoxFuture<'static, Result<(), InvalidObject>>;
    /// Queues a click on a bot's button.
    fn clicked(&self, plugin: String, click: Click) -> BoxFuture<'static, Result<(), StoreError>>;
}

/// The plugin host, as the discussions service holds it. A named type rather than a bare
/// `Arc<dyn Providers>`: futures that authorize must be `Send` for every lifetime, which the
/// compiler cannot prove through a trait object's lifetime.
#[derive(Debug, Clone)]
pub struct ProviderHost(Arc<dyn Providers>);

impl ProviderHost {
    /// The handle for `host`.
    pub fn new(host: Arc<dyn Providers>) -> Self {
        Self(host)
    }
}

impl std::ops::Deref for ProviderHost {
    type Target = dyn Providers;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// The plugins as the sequencer sees them: everything but calls into a plugin.
///
/// The sequencer holds the node's only database writer while it applies a batch; a plugin
/// call there would stall every user's sends for as long as the plugin takes. This handle has
/// no method that calls a plugin, so no code in the sequencer can: answers it needs come from
/// the command ([`Decided`]) or the cache, and a command that lacks one is sent back to be
/// decided first ([`Undecided`]).
#[derive(Debug, Clone)]
pub struct NoCalls(ProviderHost);

impl NoCalls {
    /// The handle for `plugins`.
    pub fn new(plugins: ProviderHost) -> Self {
        Self(plugins)
    }

    /// See [`ProviderCache::serves`].
    pub fn serves(&self, object_type: &str) -> bool {
        self.0.serves(object_type)
    }

    /// See [`ProviderCache::has_bots`].
    pub fn has_bots(&self) -> bool {
        self.0.has_bots()
    }

    /// See [`ProviderCache::bot_plugin`].
    pub fn bot_plugin(&self, user: &str) -> Option<String> {
        self.0.bot_plugin(user)
    }

    /// See [`ProviderCache::bot_access`].
    pub fn bot_access(&self, object: &ObjectRef, user: &str) -> Option<Access> {
        self.0.bot_access(object, user)
    }

    /// See [`ProviderCache::wake`].
    pub fn wake(&self, plugins: &[String]) {
        self.0.wake(plugins);
    }

    /// What `users` may do with `object` as far as the answers at hand tell (bots' rights,
    /// `decided`, the cache): `None` when no provider serves the object's type (its access
    /// list decides), else one answer per user, `None` for a user not decided yet.
    pub fn known_access(
        &self,
        object: &ObjectRef,
        users: &[String],
        decided: &Decided,
    ) -> Option<Vec<Option<Access>>> {
        if !self.0.serves(&object.object_type) {
            return None;
        }
        Some(self.0.answers_at_hand(object, users, decided))
    }
}

/// What the caller may do in a discussion they can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Owner of a group: manages members and the title, deletes any message.
    pub owner: bool,
    /// May post, react and edit (an object's context provider may grant reading only).
    pub write: bool,
}

/// The facts the decision needs, from the reader pool or from inside a writing batch.
pub(crate) trait AccessFacts {
    async fn member_role(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError>;
    async fn has_object_access(
        &mut self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError>;
    /// Whether `user` is the active application named `app`.
    async fn is_app(&mut self, user: &str, app: &str) -> Result<bool, StoreError>;
    /// What the home of an object discussion of another node says `user` may do there.
    async fn fed_reader(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError>;
}

/// Who answers for objects whose type a context provider serves.
///
/// Read paths ask the plugins themselves ([`Providers`]); the sequencer, which must never call a
/// plugin while it holds the database's writer, answers from what was decided before the
/// command reached it, and fails the command as undecided otherwise.
pub(crate) trait ObjectAuthority {
    /// What stops a decision: a storage failure, or for the sequencer an answer not at hand.
    type Error: From<StoreError>;
    /// What `user` may do with `object` if a context provider (or a bot's manifest) decides;
    /// `None` when the object's access list decides.
    async fn provider_access(
        &self,
        object: &ObjectRef,
        user: &str,
    ) -> Result<Option<Access>, Self::Error>;
}

impl ObjectAuthority for ProviderHost {
    type Error = StoreError;
    async fn provider_access(
        &self,
        object: &ObjectRef,
        user: &str,
    ) -> Result<Option<Access>, StoreError> {
        Ok(self.object_access(object.clone(), user.to_owned()).await)
    }
}

/// Reads the facts from the reader pool.
pub(crate) struct Reader<'a>(pub(crate) &'a Store);

impl AccessFacts for Reader<'_> {
    async fn member_role(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        self.0.discussions().member_role(discussion, user).await
    }
    async fn has_object_access(
        &mut self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError> {
        self.0.discussions().has_object_access(object, user).await
    }
    async fn is_app(&mut self, user: &str, app: &str) -> Result<bool, StoreError> {
        self.0.apps().is_app(user, app).await
    }
    async fn fed_reader(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError> {
        self.0.federated().fed_reader(discussion, user).await
    }
}

impl AccessFacts for Batch {
    async fn member_role(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        Batch::member_role(self, discussion, user).await
    }
    async fn has_object_access(
        &mut self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError> {
        Batch::has_object_access(self, object, user).await
    }
    async fn is_app(&mut self, user: &str, app: &str) -> Result<bool, StoreError> {
        Batch::is_app(self, user, app).await
    }
    async fn fed_reader(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError> {
        Batch::fed_reader(self, discussion, user).await
    }
}

/// `Some` if `user` may read `discussion` (and what else they may do).
///
/// Dialogs and groups: members. Object discussions: the context provider plugin registered
/// for the object's type, when there is one (a failing provider denies); otherwise the
/// object's access list of users and groups. An object of a linked node (its application is
/// `name@node`): what that node said (see [`is_linked_object`]). Node administrators get no
/// reading rights from their role.
pub(crate) async fn authorize<A: ObjectAuthority>(
    facts: &mut impl AccessFacts,
    authority: &A,
    user: &str,
    discussion: &DiscussionRow,
) -> Result<Option<Grant>, A::Error> {
    match discussion.kind {
        DiscussionKind::Dialog | DiscussionKind::Group => Ok(facts
            .member_role(&discussion.id, user)
            .await?
            .map(|role| Grant {
                owner: role == "owner",
                write: true,
            })),
        DiscussionKind::Object => {
            let (Some(app), Some(kind), Some(id)) = (
                &discussion.object_app,
                &discussion.object_type,
                &discussion.object_id,
            ) else {
                return Ok(None);
            };
            if is_linked_object(app) {
                return Ok(facts
                    .fed_reader(&discussion.id, user)
                    .await?
                    .map(|write| Grant {
                        owner: false,
                        write,
                    }));
            }
            let object = ObjectKey { app, kind, id };
            Ok(match object_access(facts, authority, object, user).await? {
                Access::None => None,
                Access::Read => Some(Grant {
                    owner: false,
                    write: false,
                }),
                Access::Write => Some(Grant {
                    owner: false,
                    write: true,
                }),
            })
        }
    }
}

/// Whether an object discussion's application names another node (`name@node`): the object
/// is held there, and so is the decision of who may see it. Applications of this node are
/// logins, which never hold an `@`.
pub fn is_linked_object(app: &str) -> bool {
    app.contains('@')
}

/// What `user` may do with an object's discussion: the application that owns the object's
/// namespace may do everything; otherwise the type's context provider decides if one is
/// installed, else the object's access list (which grants reading and posting).
pub(crate) async fn object_access<A: ObjectAuthority>(
    facts: &mut impl AccessFacts,
    authority: &A,
    object: ObjectKey<'_>,
    user: &str,
) -> Result<Access, A::Error> {
    // An application's user is `<name>@<node>`; only a user with that login can be it, so
    // nobody else pays for the lookup.
    if user
        .split_once('@')
        .is_some_and(|(login, _)| login == object.app)
        && facts.is_app(user, object.app).await?
    {
        return Ok(Access::Write);
    }
    let reference = ObjectRef {
        application: object.app.to_owned(),
        object_type: object.kind.to_owned(),
        object_id: object.id.to_owned(),
    };
    if let Some(access) = authority.provider_access(&reference, user).await? {
        return Ok(access);
    }
    Ok(if facts.has_object_access(object, user).await? {
        Access::Write
    } else {
        Access::None
    })
}

/// [`ReaderAccess`] as it travels (`readers` items, object queries).
pub fn reader_to_wire(access: ReaderAccess) -> veche_federation::wire::Access {
    use veche_federation::wire::Access;
    match access {
        None => Access::None,
        Some(false) => Access::Read,
        Some(true) => Access::Write,
    }
}

/// [`ReaderAccess`] from how it travels.
pub fn reader_from_wire(access: veche_federation::wire::Access) -> ReaderAccess {
    use veche_federation::wire::Access;
    match access {
        Access::None => None,
        Access::Read => Some(false),
        Access::Write => Some(true),
    }
}
