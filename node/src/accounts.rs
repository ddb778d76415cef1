//! Accounts and sessions: password hashing, login, resume, logout, the first-start setup token
//! and the administrator operations on users.

use crate::metrics::{LoginOutcome, Metrics};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veche_base::SharedClock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use veche_protocol::admin::AuditEntry;
use veche_protocol::ids::{DeviceId, Login, NodeName, UserId};
use veche_protocol::{ErrorCode, SessionInfo, Timestamp, UserInfo};

use crate::errors::{Classified, Kind};

use crate::config::AuthConfig;
use crate::throttle::{Outcome, Throttle};
use veche_store::{AuditRecord, NewUser, SessionRow, Store, StoreError, UserRow};

/// The kind of the sessions a login opens (the other kind is `embed`, see `services::embed`).
pub(crate) const SESSION_KIND_USER: &str = "user";

const SETUP_TOKEN_HASH: &str = "setup_token_hash";
const SETUP_TOKEN_EXPIRES: &str = "setup_token_expires";

/// Why an account operation failed. Each variant maps to one protocol error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// Wrong login or password, unknown or expired token. Never says which.
    #[error("invalid login or password")]
    InvalidCredentials,
    /// The account is locked.
    #[error("this account is locked; ask an administrator")]
    Locked,
    /// Too many failed attempts.
    #[error("too many failed login attempts; retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    /// The request's content is not acceptable; the message says why.
    #[error("{0}")]
    BadRequest(String),
    /// The login is taken.
    #[error("a user with this login already exists")]
    LoginTaken,
    /// No such user or session.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The setup token is unknown, used or expired, or the node already has users.
    #[error(
        "the setup token is not valid (it is used once, expires, and only works while the node has no users)"
    )]
    SetupTokenInvalid,
    /// Storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// Password hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl Classified for AccountError {
    fn kind(&self) -> Kind<'_> {
        Kind::Public(match self {
            Self::InvalidCredentials | Self::SetupTokenInvalid => ErrorCode::InvalidCredentials,
            Self::Locked => ErrorCode::AccountLocked,
            Self::Throttled(_) => ErrorCode::Throttled,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::LoginTaken => ErrorCode::Conflict,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Store(_) | Self::Hash(_) => return Kind::Internal,
        })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled(wait) => Some(*wait),
            _ => None,
        }
    }
}

/// A user and session after a successful login or resume.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The user.
    pub user: UserInfo,
    /// The session.
    pub session: SessionInfo,
    /// The user is a node administrator.
    pub admin: bool,
}

/// Fields of a new user.
#[derive(Debug, Clone)]
pub struct UserSpec {
    /// Login.
    pub login: String,
    /// Display name.
    pub display_name: String,
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
    /// Department (for the directory).
    pub department: String,
    /// Node administrator.
    pub admin: bool,
}

/// The accounts service.
#[derive(Debug, Clone)]
pub struct Accounts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    node: NodeName,
    config: AuthConfig,
    params: Params,
    hashing: Semaphore,
    throttle: Mutex<Throttle>,
    dummy_hash: String,
    setup_token_file: Option<std::path::PathBuf>,
    clock: SharedClock,
    metrics: Metrics,
}

/// SHA-256 of a token, hex: what the database keeps.
pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(crate) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub(crate) fn user_info(row: &UserRow) -> UserInfo {
    UserInfo {
        id: row.id.clone(),
        login: row.login.clone(),
        display_name: row.display_name.clone(),
        email: row.email.clone(),
        admin: row.is_admin,
        locked: row.locked,
        created_at: Timestamp(row.created_at),
        department: row.department.clone(),
    }
}

pub(crate) fn session_info(row: &SessionRow) -> SessionInfo {
    SessionInfo {
        id: row.id.clone(),
        device_id: row.device_id.clone(),
        device_name: row.device_name.clone(),
        created_at: Timestamp(row.created_at),
        last_seen_at: Timestamp(row.last_seen_at),
        expires_at: Timestamp(row.expires_at),
    }
}

impl Accounts {
    /// `setup_token_file` is where the setup token is shown to the operator; it is removed
    /// once the token is used.
    pub(crate) async fn new(
        store: Store,
        node: NodeName,
        config: AuthConfig,
        setup_token_file: Option<std::path::PathBuf>,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Result<Self, AccountError> {
        let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut inner = Inner {
            store,
            node,
            throttle: Mutex::new(Throttle::new(&config)),
            config,
            params,
            hashing: Semaphore::new(cpus),
            dummy_hash: String::new(),
            setup_token_file,
            clock,
            metrics,
        };
        // Unknown logins are checked against this hash so that they take as long as known ones.
        inner.dummy_hash = hash_password(inner.params.clone(), random_token()).await?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The node's name.
    pub fn node(&self) -> &NodeName {
        &self.inner.node
    }

    /// Now, by the node's clock.
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        hash_password(self.inner.params.clone(), password.to_owned()).await
    }

    async fn verify(&self, password: &str, hash: &str) -> Result<bool, AccountError> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))?;
        let (password, hash) = (password.to_owned(), hash.to_owned());
        tokio::task::spawn_blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return false;
            };
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .await
        .map_err(|e| AccountError::Hash(e.to_string()))
    }

    fn check_password(&self, password: &str) -> Result<(), AccountError> {
        let min = self.inner.config.min_password_len;
        if password.len() < min || password.len() > 1024 {
            return Err(AccountError::BadRequest(format!(
                "a password is {min} to 1024 bytes long"
            )));
        }
        Ok(())
    }

    /// Creates a user (administrator operation).
    pub(crate) async fn create_user(
        &self,
        spec: &UserSpec,
        actor: &str,
    ) -> Result<UserInfo, AccountError> {
        self.create(spec, actor, false).await
    }

    async fn create(
        &self,
        spec: &UserSpec,
        actor: &str,
        first_admin: bool,
    ) -> Result<UserInfo, AccountError> {
        let login: Login = spec
            .login
            .parse()
            .map_err(|e: veche_protocol::ids::IdError| AccountError::BadRequest(e.to_string()))?;
        self.check_password(&spec.password)?;
        let display_name = spec.display_name.trim();
        if display_name.chars().count() > 128 {
            return Err(AccountError::BadRequest(
                "a display name is at most 128 characters".into(),
            ));
        }
        if display_name
            .chars()
            .chain(spec.department.chars())
            .any(char::is_control)
        {
            return Err(AccountError::BadRequest(
                "a display name and a department hold no control characters".into(),
            ));
        }
        let email = spec.email.trim();
        if email.len() > 254 || (!email.is_empty() && !email.contains('@')) {
            return Err(AccountError::BadRequest(
                "the e-mail address is not valid".into(),
            ));
        }
        let id = UserId::new(login.clone(), self.inner.node.clone());
        let now = self.now_ms();
        let user = NewUser {
            id: id.to_string(),
            login: login.to_string(),
            display_name: if display_name.is_empty() {
                login.to_string()
            } else {
                display_name.to_owned()
            },
            email: email.to_owned(),
            password_hash: self.hash(&spec.password).await?,
            department: spec.department.trim().to_owned(),
            is_admin: spec.admin,
            now,
        };
        let audit = AuditRecord {
            at: now,
            actor: actor.to_owned(),
            action: "user.add",
            target: user.id.clone(),
            detail: if spec.admin {
                "admin".into()
            } else {
                String::new()
            },
        };
        match self
            .inner
            .store
            .users()
            .insert_user(&user, first_admin, &audit)
            .await
        {
            Ok(row) => {
                // The node has a user now: the setup token has served its purpose.
                self.clear_setup_token().await?;
                Ok(user_info(&row))
            }
            Err(StoreError::Conflict) if first_admin => Err(AccountError::SetupTokenInvalid),
            Err(StoreError::Conflict) => Err(AccountError::LoginTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a fresh setup token when the node has no users; returns it to be shown once.
    pub(crate) async fn issue_setup_token(
        &self,
    ) -> Result<Option<(String, Timestamp)>, AccountError> {
        let store = &self.inner.store;
        if store.users().user_count().await? > 0 {
            self.clear_setup_token().await?;
            return Ok(None);
        }
        let token = random_token();
        let expires = Timestamp(self.now_ms()).saturating_add(Duration::from_secs(
            u64::from(self.inner.config.setup_token_ttl_hours) * 3600,
        ));
        store
            .meta()
            .set(SETUP_TOKEN_HASH, &token_hash(&token))
            .await?;
        store
            .meta()
            .set(SETUP_TOKEN_EXPIRES, &expires.as_millis().to_string())
            .await?;
        Ok(Some((token, expires)))
    }

    async fn clear_setup_token(&self) -> Result<(), AccountError> {
        let store = &self.inner.store;
        store.meta().delete(SETUP_TOKEN_HASH).await?;
        store.meta().delete(SETUP_TOKEN_EXPIRES).await?;
        if let Some(path) = &self.inner.setup_token_file {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// Creates the first administrator with the setup token, then logs them in.
    pub(crate) async fn setup(
        &self,
        token: &str,
        spec: &UserSpec,
        device_id: &str,
        device_name: &str,
        ip: IpAddr,
    ) -> Result<(String, Authenticated), AccountError> {
        let store = &self.inner.store;
        let stored = store.meta().get(SETUP_TOKEN_HASH).await?;
        let expires: i64 = store
            .meta()
            .get(SETUP_TOKEN_EXPIRES)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if stored.as_deref() != Some(token_hash(token).as_str()) || expires < self.now_ms() {
            return Err(AccountError::SetupTokenInvalid);
        }
        let spec = UserSpec {
            admin: true,
            ..spec.clone()
        };
        self.create(&spec, "setup-token", true).await?;
        self.login(&spec.login, &spec.password, device_id, device_name, ip)
            .await
    }

    /// Checks a password and opens a session bound to `device_id`; returns the token.
    pub(crate) async fn login(
        &self,
        login: &str,
        password: &str,
        device_id: &str,
        device_name: &str,
        ip: IpAddr,
    ) -> Result<(String, Authenticated), AccountError> {
        let result = self
            .check_login(login, password, device_id, device_name, ip)
            .await;
        self.inner.metrics.login(match &result {
            Ok(_) => LoginOutcome::Ok,
            Err(AccountError::InvalidCredentials) => LoginOutcome::Failed,
            Err(AccountError::Locked) => LoginOutcome::Locked,
            Err(AccountError::Throttled(_)) => LoginOutcome::Throttled,
            Err(_) => LoginOutcome::Error,
        });
        result
    }

    async fn check_login(
        &self,
        login: &str,
        password: &str,
        device_id: &str,
        device_name: &str,
        ip: IpAddr,
    ) -> Result<(String, Authenticated), AccountError> {
        let device_id: DeviceId = device_id
            .parse()
            .map_err(|e: veche_protocol::ids::IdError| AccountError::BadRequest(e.to_string()))?;
        let device_name: String = device_name.trim().chars().take(128).collect();
        // The throttle key and the audit target come from the client: keep them short.
        let key: String = login.to_lowercase().chars().take(64).collect();
        let mut attempt = self.attempt(&key, ip)?;

        let row = match login.parse::<Login>() {
            Ok(l) => self.inner.store.users().user_by_login(l.as_str()).await?,
            Err(_) => None,
        };
        let hash = row
            .as_ref()
            .map_or(self.inner.dummy_hash.as_str(), |r| r.password_hash.as_str());
        let ok = password.len() <= 1024 && self.verify(password, hash).await? && row.is_some();
        let Some(user) = row.filter(|_| ok) else {
            // The failure counts from when the client can next try: after the audit write.
            attempt.outcome = Outcome::Failed;
            self.audit("login.fail", &format!("ip:{ip}"), &key, String::new())
                .await;
            drop(attempt);
            return Err(AccountError::InvalidCredentials);
        };
        attempt.outcome = Outcome::Succeeded;
        drop(attempt);
        if user.locked {
            self.audit("login.locked", &format!("ip:{ip}"), &user.id, String::new())
                .await;
            return Err(AccountError::Locked);
        }

        let token = random_token();
        let now = self.now_ms();
        let session = SessionRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: user.id.clone(),
            token_hash: token_hash(&token),
            device_id: device_id.to_string(),
            device_name: if device_name.is_empty() {
                device_id.to_string()
            } else {
                device_name
            },
            created_at: now,
            last_seen_at: now,
            expires_at: self.expiry(now),
            kind: SESSION_KIND_USER.into(),
        };
        let audit = AuditRecord {
            at: now,
            actor: format!("ip:{ip}"),
            action: "session.create",
            target: user.id.clone(),
            detail: format!("session {} device {}", session.id, session.device_id),
        };
        // The session is created only if the user is still unlocked and still has the password
        // just checked: a lock or a password reset that commits meanwhile wins.
        if !self
            .inner
            .store
            .sessions()
            .insert_session(&session, &user.password_hash, &audit)
            .await?
        {
            return Err(AccountError::InvalidCredentials);
        }
        self.upgrade_hash(&user, password).await;
        Ok((
            token,
            Authenticated {
                admin: user.is_admin,
                user: user_info(&user),
                session: session_info(&session),
            },
        ))
    }

    /// Re-hashes a password whose stored parameters are weaker than the configured ones.
    async fn upgrade_hash(&self, user: &UserRow, password: &str) {
        let Ok(parsed) = PasswordHash::new(&user.password_hash) else {
            return;
        };
        let Ok(stored) = Params::try_from(&parsed) else {
            return;
        };
        if stored.m_cost() >= self.inner.params.m_cost()
            && stored.t_cost() >= self.inner.params.t_cost()
        {
            return;
        }
        match self.hash(password).await {
            Ok(hash) => {
                let store = &self.inner.store;
                if let Err(e) = store
                    .users()
                    .rehash_password(&user.id, &user.password_hash, &hash)
                    .await
                {
                    tracing::warn!(user = %user.id, error = %e, "could not upgrade password hash");
                }
            }
            Err(e) => {
                tracing::warn!(user = %user.id, error = %e, "could not upgrade password hash")
            }
        }
    }

    /// Authenticates with a session token from an earlier login.
    pub(crate) async fn resume(
        &self,
        token: &str,
        device_id: &str,
    ) -> Result<Authenticated, AccountError> {
        let store = &self.inner.store;
        let now = self.now_ms();
        let session = store
            .sessions()
            .session_by_token_hash(&token_hash(token))
            .await?
            // An embed session's token opens its widget's discussion only, never this way.
            .filter(|s| {
                s.kind == SESSION_KIND_USER && s.device_id == device_id && s.expires_at > now
            })
            .ok_or(AccountError::InvalidCredentials)?;
        let user = store
            .users()
            .user_by_id(&session.user_id)
            .await?
            .ok_or(AccountError::InvalidCredentials)?;
        if user.locked {
            return Err(AccountError::Locked);
        }
        let expires = self.expiry(now);
        store
            .sessions()
            .touch_session(&session.id, now, expires)
            .await?;
        let session = SessionRow {
            last_seen_at: now,
            expires_at: expires,
            ..session
        };
        Ok(Authenticated {
            admin: user.is_admin,
            user: user_info(&user),
            session: session_info(&session),
        })
    }

    /// Ends one session of a user; returns the ended ids (empty if it was already gone).
    pub(crate) async fn end_sessions(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        actor: &str,
        action: &'static str,
    ) -> Result<Vec<String>, AccountError> {
        let audit = AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action,
            target: user_id.to_owned(),
            detail: session_id
                .map(|s| format!("session {s}"))
                .unwrap_or_else(|| "all sessions".into()),
        };
        Ok(self
            .inner
            .store
            .sessions()
            .delete_sessions(user_id, session_id, &audit)
            .await?)
    }

    /// Changes a password. With `keep_session`, that session survives; all others end.
    pub(crate) async fn set_password(
        &self,
        login: &str,
        password: &str,
        keep_session: Option<&str>,
        actor: &str,
    ) -> Result<Vec<String>, AccountError> {
        self.check_password(password)?;
        let hash = self.hash(password).await?;
        let now = self.now_ms();
        let audit = AuditRecord {
            at: now,
            actor: actor.to_owned(),
            action: "user.passwd",
            target: format!("{login}@{}", self.inner.node),
            detail: String::new(),
        };
        let (_, ended) = self
            .inner
            .store
            .users()
            .set_password(login, &hash, keep_session, now, &audit)
            .await?
            .ok_or(AccountError::NotFound("user"))?;
        Ok(ended)
    }

    /// Changes the caller's own password after checking the old one (throttled like a login).
    pub(crate) async fn change_own_password(
        &self,
        user_id: &str,
        session_id: &str,
        old: &str,
        new: &str,
        ip: IpAddr,
    ) -> Result<Vec<String>, AccountError> {
        let user = self
            .inner
            .store
            .users()
            .user_by_id(user_id)
            .await?
            .ok_or(AccountError::NotFound("user"))?;
        let mut attempt = self.attempt(&user.login, ip)?;
        if old.len() > 1024 || !self.verify(old, &user.password_hash).await? {
            attempt.outcome = Outcome::Failed;
            self.audit(
                "passwd.fail",
                &format!("user:{user_id}"),
                &user.id,
                String::new(),
            )
            .await;
            drop(attempt);
            return Err(AccountError::InvalidCredentials);
        }
        attempt.outcome = Outcome::Succeeded;
        drop(attempt);
        self.set_password(
            &user.login,
            new,
            Some(session_id),
            &format!("user:{user_id}"),
        )
        .await
    }

    /// Locks or unlocks a user; returns the user and the sessions that ended.
    pub(crate) async fn set_locked(
        &self,
        login: &str,
        locked: bool,
        actor: &str,
    ) -> Result<(UserInfo, Vec<String>), AccountError> {
        let now = self.now_ms();
        let audit = AuditRecord {
            at: now,
            actor: actor.to_owned(),
            action: if locked { "user.lock" } else { "user.unlock" },
            target: format!("{login}@{}", self.inner.node),
            detail: String::new(),
        };
        let (row, ended) = self
            .inner
            .store
            .users()
            .set_locked(login, locked, now, &audit)
            .await?
            .ok_or(AccountError::NotFound("user"))?;
        Ok((user_info(&row), ended))
    }

    pub(crate) async fn user(&self, login: &str) -> Result<UserRow, AccountError> {
        self.inner
            .store
            .users()
            .user_by_login(login)
            .await?
            .ok_or(AccountError::NotFound("user"))
    }

    pub(crate) async fn user_by_id(&self, id: &str) -> Result<UserRow, AccountError> {
        self.inner
            .store
            .users()
            .user_by_id(id)
            .await?
            .ok_or(AccountError::NotFound("user"))
    }

    pub(crate) async fn users(&self) -> Result<Vec<UserInfo>, AccountError> {
        Ok(self
            .inner
            .store
            .users()
            .list()
            .await?
            .iter()
            .map(user_info)
            .collect())
    }

    pub(crate) async fn audit_tail(&self, limit: u32) -> Result<Vec<AuditEntry>, AccountError> {
        Ok(self
            .inner
            .store
            .audit_log()
            .audit_tail(i64::from(limit.clamp(1, 10_000)))
            .await?
            .into_iter()
            .map(|r| AuditEntry {
                seq: r.seq,
                at: Timestamp(r.at),
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: r.detail,
            })
            .collect())
    }

    pub(crate) async fn sessions(&self, login: &str) -> Result<Vec<SessionInfo>, AccountError> {
        let user = self.user(login).await?;
        Ok(self
            .inner
            .store
            .sessions()
            .sessions_of(&user.id)
            .await?
            .iter()
            .map(session_info)
            .collect())
    }

    /// A user's own sessions that have not expired, most recently seen first.
    pub(crate) async fn own_sessions(
        &self,
        user_id: &str,
    ) -> Result<Vec<SessionInfo>, AccountError> {
        let now = self.now_ms();
        let mut rows: Vec<_> = self
            .inner
            .store
            .sessions()
            .sessions_of(user_id)
            .await?
            .into_iter()
            .filter(|s| s.expires_at > now)
            .collect();
        rows.sort_by(|a, b| b.last_seen_at.cmp(&a.last_seen_at).then(a.id.cmp(&b.id)));
        Ok(rows.iter().map(session_info).collect())
    }

    /// Ends one of a user's own sessions (signs that device out); returns the ended ids.
    /// Another user's session is "not found", as one that does not exist.
    pub(crate) async fn end_own_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Vec<String>, AccountError> {
        let ended = self
            .end_sessions(
                user_id,
                Some(session_id),
                &format!("user:{user_id}"),
                "session.end",
            )
            .await?;
        if ended.is_empty() {
            return Err(AccountError::NotFound("session"));
        }
        Ok(ended)
    }

    /// A user's client preferences as stored (a JSON object's text), if any.
    pub(crate) async fn preferences(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        self.inner.store.users().preferences(user_id).await
    }

    /// Replaces a user's client preferences (checked by the caller).
    pub(crate) async fn set_preferences(
        &self,
        user_id: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .store
            .users()
            .set_preferences(user_id, json, self.now_ms())
            .await
    }

    fn expiry(&self, now: i64) -> i64 {
        now + i64::from(self.inner.config.session_idle_days) * 86_400_000
    }

    /// Whether a session still exists (it may have been revoked a moment ago).
    pub(crate) async fn session_exists(&self, session_id: &str) -> Result<bool, AccountError> {
        Ok(self
            .inner
            .store
            .sessions()
            .session_exists(session_id)
            .await?)
    }

    /// Starts a throttled credential check; it ends (with its outcome) when dropped.
    fn attempt(&self, key: &str, ip: IpAddr) -> Result<Attempt<'_>, AccountError> {
        self.throttle()
            .begin(key, ip, Instant::now())
            .map_err(AccountError::Throttled)?;
        Ok(Attempt {
            accounts: self,
            key: key.to_owned(),
            ip,
            outcome: Outcome::Undecided,
        })
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, Throttle> {
        // A panic while holding this lock cannot leave the throttle inconsistent enough to
        // matter; keep serving rather than propagate the poison.
        self.inner
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn audit(&self, action: &'static str, actor: &str, target: &str, detail: String) {
        let record = AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            detail,
        };
        if let Err(e) = self.inner.store.audit_log().append(&record).await {
            tracing::error!(error = %e, action, "could not write audit record");
        }
    }
}

/// A credential check in progress, counted by the throttle until dropped.
struct Attempt<'a> {
    accounts: &'a Accounts,
    key: String,
    ip: IpAddr,
    outcome: Outcome,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.accounts
            .throttle()
            .end(&self.key, self.ip, self.outcome, Instant::now());
    }
}

async fn hash_password(params: Params, password: String) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hash(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hash(e.to_string()))?
}
