//! Rebuilds the store when a migration is added: `sqlx::migrate!` embeds the files it found,
//! and Cargo watches only the ones that existed when it last ran.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
