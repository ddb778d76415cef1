//! The `veche` command, built beside the integration tests so that they can run it as a real
//! process (in a terminal, under signals) without building the node's own binary.

fn main() -> std::process::ExitCode {
    veche_node::cli::main()
}
