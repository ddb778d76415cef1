//! `veche`: the node and its administration commands.

fn main() -> std::process::ExitCode {
    veche_node::cli::main()
}
