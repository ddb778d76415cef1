//! `veche chat`: a full-screen terminal client.
//!
//! [`App`] is the whole state and its transitions (keys in, commands out; events in); it does
//! no IO, so tests drive it directly and render it with ratatui's `TestBackend`. `run` wires it
//! to a real terminal and the client SDK.

mod app;
mod run;
mod ui;

pub use app::{App, Command, Focus, Line, Mode, Pending, Pick, TYPING_EVERY_MS};
/// The keys [`App::on_key`] takes.
pub use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
pub use run::{perform, run};
pub use ui::draw;

#[cfg(test)]
mod tests;
