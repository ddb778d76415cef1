//! `veche-erp-example --url http://127.0.0.1:8780 --email ops@corp.example --user alice`
//!
//! Walks through what an ERP does with Veche; asks for the e-mailed codes on the terminal.
//! The node must allow self-registration from the address's domain
//! (`[apps] self_registration_domains = ["corp.example"]`).

use clap::Parser;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Parser)]
struct Args {
    /// The node's HTTP gateway.
    #[arg(long, default_value = "http://127.0.0.1:8780")]
    url: String,
    /// Where the registration codes go.
    #[arg(long)]
    email: String,
    /// Users who may see invoice INV-1 (repeat).
    #[arg(long = "user")]
    users: Vec<String>,
    /// This installation's id.
    #[arg(long, default_value = "erp-example-1")]
    instance: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let users: Vec<&str> = args.users.iter().map(String::as_str).collect();
    let email = args.email.clone();
    let report =
        veche_erp_example::scenario(&args.url, &args.email, &users, &args.instance, |app| {
            let prompt = format!("code e-mailed to {email} for {app}: ");
            async move {
                let mut out = tokio::io::stdout();
                out.write_all(prompt.as_bytes()).await?;
                out.flush().await?;
                let line = tokio::task::spawn_blocking(|| {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map(|_| line)
                })
                .await??;
                Ok(line.trim().to_owned())
            }
        })
        .await?;
    println!("invoice INV-1 discusses in {}", report.discussion);
    println!("invoice.posted accepted as new: {}", report.event_fresh);
    println!(
        "the warehouse received: {}",
        serde_json::Value::from(report.received)
    );
    Ok(())
}
