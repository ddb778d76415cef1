//! The Rust SDK for Veche plugins.
//!
//! A plugin is a WebAssembly component built from a `cdylib` crate with
//! `cargo build --release --target wasm32-wasip2`. Implement [`Plugin`] for a type (every method
//! has a default, so implement only the roles you declare in `plugin.toml`) and call
//! [`register_plugin!`] once:
//!
//! ```ignore
//! use veche_plugin_api::*;
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn on_message(_cx: Invocation, msg: Message) -> Result<Vec<BotAction>, PluginError> {
//!         Ok(vec![BotAction::React((msg.id, "eyes".into()))])
//!     }
//! }
//!
//! register_plugin!(Echo);
//! ```
//!
//! The WIT package behind it is `veche:plugin@0.1.0` (in `wit/`); this crate's version is the
//! package's version. Plugins in other languages use the WIT directly, one world per role.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "full-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_full_plugin",
        default_bindings_module: "veche_plugin_api::bindings",
    });
}

pub use bindings::veche::plugin::types::{
    Access, ActionButton, ActionClick, BlobInfo, BotAction, BusinessEvent, Invocation, Message,
    ObjectRef, PluginError, Post, RenderedObject,
};

/// The WIT package this SDK builds against.
pub const API_VERSION: &str = "veche:plugin@0.1.0";

/// A plugin: implement the methods of the roles it declares; the rest answer `unsupported`.
pub trait Plugin: 'static {
    /// Runs once on every fresh instance, before any other call. Keep it cheap.
    fn init() -> Result<(), String> {
        Ok(())
    }

    /// Context provider: is this a valid reference to an object?
    fn validate(_cx: Invocation, _obj: ObjectRef) -> Result<(), PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Context provider: how the object looks (title, link, fields).
    fn render(_cx: Invocation, _obj: ObjectRef) -> Result<RenderedObject, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Context provider: what each of `users` may do in the object's discussion.
    fn authorize(
        _cx: Invocation,
        _obj: ObjectRef,
        _users: Vec<String>,
    ) -> Result<Vec<Access>, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Bot: a message in a discussion the bot belongs to, or one that mentions it.
    fn on_message(_cx: Invocation, _msg: Message) -> Result<Vec<BotAction>, PluginError> {
        Ok(Vec::new())
    }

    /// Bot: a business event of a kind the bot subscribed to.
    fn on_event(_cx: Invocation, _evt: BusinessEvent) -> Result<Vec<BotAction>, PluginError> {
        Ok(Vec::new())
    }

    /// Bot: a user pressed a button under one of the bot's messages.
    fn on_action(_cx: Invocation, _click: ActionClick) -> Result<Vec<BotAction>, PluginError> {
        Ok(Vec::new())
    }

    /// Storage backend: starts writing the blob `key` (replacing it when finished).
    fn open_write(_cx: Invocation, _key: String) -> Result<Box<dyn BlobWriter>, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Storage backend: reads the blob `key` from its start.
    fn open_read(_cx: Invocation, _key: String) -> Result<Box<dyn BlobReader>, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Storage backend: the blob's size, if it exists.
    fn stat(_cx: Invocation, _key: String) -> Result<Option<BlobInfo>, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Storage backend: removes the blob; `false` if there was none.
    fn delete(_cx: Invocation, _key: String) -> Result<bool, PluginError> {
        Err(PluginError::Unsupported)
    }

    /// Storage backend: blobs whose keys start with `prefix`, in key order, after `after`.
    fn list(
        _cx: Invocation,
        _prefix: String,
        _after: Option<String>,
        _limit: u32,
    ) -> Result<Vec<BlobInfo>, PluginError> {
        Err(PluginError::Unsupported)
    }
}

/// A blob being written by a storage backend.
pub trait BlobWriter {
    /// Appends a chunk.
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), PluginError>;
    /// Makes the blob visible under its key.
    fn finish(&mut self) -> Result<BlobInfo, PluginError>;
    /// Drops what was written.
    fn abort(&mut self);
}

/// A blob being read from a storage backend.
pub trait BlobReader {
    /// The next chunk of at most `max_bytes`, `None` at the end.
    fn read(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError>;
}

/// Logging into the node's log and the plugin's own (`veche plugin logs <id>`).
pub mod log {
    use crate::bindings::veche::plugin::log::log;

    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message, &[]);
    }

    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message, &[]);
    }

    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message, &[]);
    }

    /// Logs with structured fields.
    pub fn with_fields(level: Level, message: &str, fields: &[(String, String)]) {
        log(level, message, fields);
    }

    pub use crate::bindings::veche::plugin::log::Level;
}

/// The administrator's configuration of this installation.
pub mod config {
    /// The value of `key`, if the administrator set it.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::veche::plugin::config::get(key)
    }
}

/// The plugin's own key-value store (needs the `kv` right).
pub mod kv {
    use crate::PluginError;
    use crate::bindings::veche::plugin::kv;

    /// The value of `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, PluginError> {
        kv::get(key)
    }

    /// Sets `key`; refused beyond the plugin's quota.
    pub fn set(key: &str, value: &[u8]) -> Result<(), PluginError> {
        kv::set(key, value)
    }

    /// Removes `key`.
    pub fn delete(key: &str) -> Result<(), PluginError> {
        kv::delete(key)
    }

    /// Keys starting with `prefix`, in order, after `after`, at most `limit`.
    pub fn list_keys(
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PluginError> {
        kv::list_keys(prefix, after, limit)
    }
}

/// Posting during a call (needs the `messaging` right). Returning [`BotAction`]s is usually
/// simpler.
pub mod messaging {
    use crate::{PluginError, Post};

    /// Posts as the plugin's bot; returns the new message's id.
    pub fn post(post: &Post) -> Result<String, PluginError> {
        crate::bindings::veche::plugin::messaging::post_message(post)
    }
}

impl Post {
    /// A plain text message into an object's discussion.
    pub fn to_object(object: ObjectRef, text: impl Into<String>) -> Self {
        Post {
            discussion: None,
            object: Some(object),
            text: text.into(),
            data: None,
            actions: Vec::new(),
            reply_to: None,
        }
    }

    /// A plain text message into a discussion the bot belongs to.
    pub fn to_discussion(discussion: impl Into<String>, text: impl Into<String>) -> Self {
        Post {
            discussion: Some(discussion.into()),
            object: None,
            text: text.into(),
            data: None,
            actions: Vec::new(),
            reply_to: None,
        }
    }
}

#[doc(hidden)]
pub mod __private {
    use crate::bindings::exports::veche::plugin::storage_backend::{GuestReader, GuestWriter};
    use crate::{BlobInfo, BlobReader, BlobWriter, PluginError};
    use std::cell::RefCell;

    /// The writer resource every SDK plugin exports.
    pub struct Writer(pub RefCell<Box<dyn BlobWriter>>);

    impl std::fmt::Debug for Writer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Writer")
        }
    }

    impl GuestWriter for Writer {
        fn write(&self, chunk: Vec<u8>) -> Result<(), PluginError> {
            self.0.borrow_mut().write(chunk)
        }
        fn finish(&self) -> Result<BlobInfo, PluginError> {
            self.0.borrow_mut().finish()
        }
        fn abort(&self) {
            self.0.borrow_mut().abort()
        }
    }

    /// The reader resource every SDK plugin exports.
    pub struct Reader(pub RefCell<Box<dyn BlobReader>>);

    impl std::fmt::Debug for Reader {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Reader")
        }
    }

    impl GuestReader for Reader {
        fn read(&self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
            self.0.borrow_mut().read(max_bytes)
        }
    }
}

/// Exports `$t` (a type implementing [`Plugin`]) as the component's every role.
#[macro_export]
macro_rules! register_plugin {
    ($t:ty) => {
        #[doc(hidden)]
        pub struct __VechePluginExports;

        impl $crate::bindings::exports::veche::plugin::lifecycle::Guest for __VechePluginExports {
            fn init() -> ::core::result::Result<(), ::std::string::String> {
                <$t as $crate::Plugin>::init()
            }
        }

        impl $crate::bindings::exports::veche::plugin::context_provider::Guest
            for __VechePluginExports
        {
            fn validate(
                cx: $crate::Invocation,
                obj: $crate::ObjectRef,
            ) -> ::core::result::Result<(), $crate::PluginError> {
                <$t as $crate::Plugin>::validate(cx, obj)
            }
            fn render(
                cx: $crate::Invocation,
                obj: $crate::ObjectRef,
            ) -> ::core::result::Result<$crate::RenderedObject, $crate::PluginError> {
                <$t as $crate::Plugin>::render(cx, obj)
            }
            fn authorize(
                cx: $crate::Invocation,
                obj: $crate::ObjectRef,
                users: ::std::vec::Vec<::std::string::String>,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Access>, $crate::PluginError> {
                <$t as $crate::Plugin>::authorize(cx, obj, users)
            }
        }

        impl $crate::bindings::exports::veche::plugin::bot::Guest for __VechePluginExports {
            fn on_message(
                cx: $crate::Invocation,
                msg: $crate::Message,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::BotAction>, $crate::PluginError>
            {
                <$t as $crate::Plugin>::on_message(cx, msg)
            }
            fn on_event(
                cx: $crate::Invocation,
                evt: $crate::BusinessEvent,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::BotAction>, $crate::PluginError>
            {
                <$t as $crate::Plugin>::on_event(cx, evt)
            }
            fn on_action(
                cx: $crate::Invocation,
                click: $crate::ActionClick,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::BotAction>, $crate::PluginError>
            {
                <$t as $crate::Plugin>::on_action(cx, click)
            }
        }

        impl $crate::bindings::exports::veche::plugin::storage_backend::Guest
            for __VechePluginExports
        {
            type Writer = $crate::__private::Writer;
            type Reader = $crate::__private::Reader;

            fn open_write(
                cx: $crate::Invocation,
                key: ::std::string::String,
            ) -> ::core::result::Result<
                $crate::bindings::exports::veche::plugin::storage_backend::Writer,
                $crate::PluginError,
            > {
                <$t as $crate::Plugin>::open_write(cx, key).map(|w| {
                    $crate::bindings::exports::veche::plugin::storage_backend::Writer::new(
                        $crate::__private::Writer(::core::cell::RefCell::new(w)),
                    )
                })
            }
            fn open_read(
                cx: $crate::Invocation,
                key: ::std::string::String,
            ) -> ::core::result::Result<
                $crate::bindings::exports::veche::plugin::storage_backend::Reader,
                $crate::PluginError,
            > {
                <$t as $crate::Plugin>::open_read(cx, key).map(|r| {
                    $crate::bindings::exports::veche::plugin::storage_backend::Reader::new(
                        $crate::__private::Reader(::core::cell::RefCell::new(r)),
                    )
                })
            }
            fn stat(
                cx: $crate::Invocation,
                key: ::std::string::String,
            ) -> ::core::result::Result<::core::option::Option<$crate::BlobInfo>, $crate::PluginError>
            {
                <$t as $crate::Plugin>::stat(cx, key)
            }
            fn delete(
                cx: $crate::Invocation,
                key: ::std::string::String,
            ) -> ::core::result::Result<bool, $crate::PluginError> {
                <$t as $crate::Plugin>::delete(cx, key)
            }
            fn list_blobs(
                cx: $crate::Invocation,
                prefix: ::std::string::String,
                after: ::core::option::Option<::std::string::String>,
                limit: u32,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::BlobInfo>, $crate::PluginError>
            {
                <$t as $crate::Plugin>::list(cx, prefix, after, limit)
            }
        }

        // Only components export: a native build (unit tests of the plugin's logic) links no
        // WIT symbols, whose names native linkers refuse.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_full_plugin!(__VechePluginExports with_types_in $crate::bindings);
    };
}
