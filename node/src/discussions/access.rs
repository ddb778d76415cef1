//! The one authorization function: who may see a discussion.
//!
//! Every read path (list, get, history, sync, edit history, clicks, watching) and every write
//! (in the sequencer) asks [`authorize`]. Someone it refuses learns nothing: callers answer
//! "discussion not found", exactly as for a discussion that does not exist.

use veche_protocol::discussions::ObjectRef;

use crate::plugins::{Access, Plugins};
use crate::store::{Batch, DiscussionRow, ObjectKey, ReaderAccess, Store, StoreError};

/// What the caller may do in a discussion they can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Owner of a group: manages members and the title, deletes any message.
    pub(crate) owner: bool,
    /// May post, react and edit (an object's context provider may grant reading only).
    pub(crate) write: bool,
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
/// Read paths ask the plugins themselves ([`Plugins`]); the sequencer, which must never call a
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

impl ObjectAuthority for Plugins {
    type Error = StoreError;
    async fn provider_access(
        &self,
        object: &ObjectRef,
        user: &str,
    ) -> Result<Option<Access>, StoreError> {
        Ok(self.object_access(object, user).await)
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
        self.0.member_role(discussion, user).await
    }
    async fn has_object_access(
        &mut self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError> {
        self.0.has_object_access(object, user).await
    }
    async fn is_app(&mut self, user: &str, app: &str) -> Result<bool, StoreError> {
        self.0.is_app(user, app).await
    }
    async fn fed_reader(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError> {
        self.0.fed_reader(discussion, user).await
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
    match discussion.kind.as_str() {
        "dialog" | "group" => {
            Ok(facts
                .member_role(&discussion.id, user)
                .await?
                .map(|role| Grant {
                    owner: role == "owner",
                    write: true,
                }))
        }
        "object" => {
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
        _ => Ok(None),
    }
}

/// Whether an object discussion's application names another node (`name@node`): the object
/// is held there, and so is the decision of who may see it. Applications of this node are
/// logins, which never hold an `@`.
pub(crate) fn is_linked_object(app: &str) -> bool {
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
