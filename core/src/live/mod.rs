//! Who is connected now and how they are: the registry of live connections (what each
//! subscribed to, and delivery of encoded events to them) and presence (online, away, typing).
//! It knows nothing of discussions: the layers above tell it whom to deliver to.

pub mod presence;
pub mod registry;
