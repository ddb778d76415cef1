//! The `veche-bench` command: see `veche-bench --help`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use veche_bench::report::Report;
use veche_bench::{
    AdminAccess, IdleParams, LoginParams, MixedParams, RoomParams, SearchParams, Target,
};
use veche_client::{ClientConfig, Trust};

/// Drives a running Veche node over QUIC like real clients and measures it from outside.
///
/// Point it at a node with --addr and --data (the node's data folder on this machine: its
/// admin socket creates the generator's users, its tls/ca.pem is trusted, and the node's pid
/// is read from the socket for its CPU and memory). For a node elsewhere give --ca or
/// --fingerprint, --admin-login and --admin-password (an administrator's account), and no
/// CPU or memory of the node is reported unless --node-pid names a local process.
///
/// Every workload prints its figures; --json FILE appends one JSON line per run (and one for
/// the median with --repeat), `--json -` prints them on standard output instead.
/// `bench/run.sh` starts a release node with a temporary data folder and runs a workload
/// three times.
#[derive(Debug, Parser)]
#[command(name = "veche-bench", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Args)]
struct Global {
    /// The node's QUIC address.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    addr: SocketAddr,
    /// The node's data folder on this machine (admin.sock, tls/ca.pem).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    /// Trust this CA certificate (PEM) [default: tls/ca.pem in --data].
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (hex).
    #[arg(long, global = true)]
    fingerprint: Option<String>,
    /// The name the node's certificate carries.
    #[arg(long, global = true, default_value = "localhost")]
    server_name: String,
    /// The admin socket [default: admin.sock in --data].
    #[arg(long, global = true)]
    admin_socket: Option<PathBuf>,
    /// Create users as this administrator, over QUIC, instead of through the admin socket.
    #[arg(long, global = true, requires = "admin_password")]
    admin_login: Option<String>,
    /// The administrator's password.
    #[arg(
        long,
        global = true,
        env = "VECHE_BENCH_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    admin_password: Option<String>,
    /// The node's process id, for its CPU and memory [default: the admin socket's peer].
    #[arg(long, global = true)]
    node_pid: Option<u32>,
    /// The generator's users are <prefix>-s0, <prefix>-r0, ... (created when missing, reused
    /// otherwise).
    #[arg(long, global = true, default_value = "bench")]
    prefix: String,
    /// The password of the generator's users.
    #[arg(long, global = true, default_value = "veche bench password")]
    password: String,
    /// Worker threads of the generator [default: the machine's cores].
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Seconds one request may take.
    #[arg(long, global = true, default_value_t = 60)]
    request_timeout: u64,
    /// Run the workload this many times and print the median of each figure too.
    #[arg(long, global = true, default_value_t = 1)]
    repeat: usize,
    /// Append each report as a JSON line to this file (`-`: standard output).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// One group: senders post, every receiver must get every message exactly once.
    ///
    /// Each sender keeps --window sends in flight on its one connection (pipelined on the
    /// control stream), at --rate messages a second over all senders or as fast as the node
    /// acknowledges. Reports stored msg/s (from the first send to the last `sent` answer),
    /// deliveries, delivery latency p50/p99/max (from the send to the receiver decoding the
    /// event), missing and duplicated deliveries (a final marker message proves every
    /// receiver saw everything before it), node and generator CPU per message, node RSS.
    /// A new group per run; users <prefix>-s<i> and <prefix>-r<i>.
    Room {
        /// Users posting, one connection each.
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Users receiving, one connection each.
        #[arg(long, default_value_t = 10)]
        receivers: usize,
        /// Sends in flight per sender (the node serves 32 at once per connection).
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Messages a second over all senders (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Messages over all senders.
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        /// Text size of each message, bytes.
        #[arg(long, default_value_t = 60)]
        text_bytes: usize,
        /// A receiver that gets nothing for this many seconds gives up.
        #[arg(long, default_value_t = 30)]
        stall_secs: u64,
    },
    /// Many idle connections, each its own user: password logins, a quiet hold, resumes.
    ///
    /// Reports logins/s, the node's RSS before and after (and KiB per connection), the
    /// node's CPU per second while the connections sit idle for --hold-secs, then every
    /// user reconnects and resumes its session: resumes/s and RSS. With --connections 0 it
    /// measures the idle node alone. Users <prefix>-i<i>. More than 50 connections need the
    /// node's server.max_connections_per_ip raised (bench/run.sh does).
    Idle {
        /// Connections, each its own user.
        #[arg(long, default_value_t = 20)]
        connections: usize,
        /// Logins and resumes under way at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Seconds the connections are held idle while the node's CPU is measured.
        #[arg(long, default_value_t = 10)]
        hold_secs: u64,
        /// Connections sharing one UDP socket of the generator.
        #[arg(long, default_value_t = 256)]
        per_endpoint: usize,
    },
    /// Password logins at --rate, then session resumes, measured separately.
    ///
    /// Every attempt is a fresh QUIC connection (handshake included), closed after it
    /// authenticates, as a starting or reconnecting client makes it. Password logins are
    /// bound by argon2id on the node; resumes cost a read and a write. One user per parallel
    /// worker (<prefix>-l<i>), so that the node's per-account throttle never sees two at once.
    Logins {
        /// Password logins a second (0: as fast as --parallel allows).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Password logins in all.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Resumes in all, after the logins (0: none).
        #[arg(long, default_value_t = 2_000)]
        resumes: usize,
        /// Resumes a second (0: as fast as --parallel allows).
        #[arg(long, default_value_t = 0.0)]
        resume_rate: f64,
        /// Attempts under way at once (at most the node's server.max_unauthenticated_per_ip).
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Full-text search: a corpus of messages first, then queries of one or two words.
    ///
    /// Posts --corpus messages of office words (Russian and English) into a new group, waits
    /// until the index finds the last one, then runs --queries searches over everything the
    /// user may read, --parallel at a time on one connection: queries/s, query latency, node
    /// CPU per query. Users <prefix>-q0 and <prefix>-q1.
    Search {
        /// Queries in all.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Queries under way at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
        /// Messages posted before the queries.
        #[arg(long, default_value_t = 5_000)]
        corpus: u64,
    },
    /// An office day, compressed: many idle clients, a few active groups, typing, presence.
    ///
    /// --users connections (users <prefix>-m<i>) read their events as clients do; --groups
    /// groups of --group-size members each. Messages arrive at --message-rate a second
    /// (Poisson), each preceded by its author typing for 1-3 s; presence changes at
    /// --presence-rate a second (going away, coming back, do not disturb, automatic).
    /// Reports messages, deliveries and their latency, typing and presence events received,
    /// node CPU per second and per message, node RSS. Object discussions are not part of it:
    /// they need an application or a context provider plugin on the node.
    Mixed {
        /// Users connected.
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// Active groups.
        #[arg(long, default_value_t = 5)]
        groups: usize,
        /// Members of each active group.
        #[arg(long, default_value_t = 8)]
        group_size: usize,
        /// Seconds the day lasts.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Messages a second over all groups.
        #[arg(long, default_value_t = 5.0)]
        message_rate: f64,
        /// Presence changes a second over all users.
        #[arg(long, default_value_t = 2.0)]
        presence_rate: f64,
        /// Logins under way at once while connecting.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// The median of each figure over runs written by --json (no node needed).
    ///
    /// Takes the last --last lines of FILE that are of the same workload as its last line.
    Median {
        /// A file of JSON lines written by --json.
        file: PathBuf,
        /// How many runs, counted back from the end.
        #[arg(long, default_value_t = 3)]
        last: usize,
    },
    /// The disk's fsync rate: 4 KiB written and fdatasync'ed in a loop (no node needed).
    ///
    /// Each durable commit of the node costs at least one such sync; print it beside every
    /// throughput figure.
    Fsync {
        /// A folder on the disk to measure [default: --data, else the current folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seconds to measure.
        #[arg(long, default_value_t = 3)]
        secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = cli
        .global
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(run(cli, threads))
}

async fn run(cli: Cli, threads: usize) -> anyhow::Result<()> {
    let g = &cli.global;
    if let Workload::Fsync { dir, secs } = &cli.workload {
        let dir = dir
            .clone()
            .or_else(|| g.data.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        let rate = veche_bench::fsync::fsync_rate(&dir, Duration::from_secs(*secs))
            .with_context(|| format!("cannot measure fsync in {}", dir.display()))?;
        let mut report = Report::new("fsync");
        report
            .text("dir", dir.display().to_string())
            .num("fsync_per_s", rate, "/s");
        return emit(g, &report, "fsync");
    }
    if let Workload::Median { file, last } = &cli.workload {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let reports: Vec<Report> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Report::from_json(&v))
            .collect();
        let Some(workload) = reports.last().map(|r| r.workload.clone()) else {
            anyhow::bail!("no reports in {}", file.display());
        };
        let mut runs: Vec<Report> = reports
            .into_iter()
            .rev()
            .filter(|r| r.workload == workload)
            .take(*last)
            .collect();
        runs.reverse();
        let median = Report::median_of(&runs).context("no runs")?;
        return emit(
            g,
            &median,
            &format!("{workload}: median of {} runs", runs.len()),
        );
    }
    let target = target(g, threads).await?;
    let mut runs = Vec::new();
    for run in 1..=g.repeat.max(1) {
        let report = match &cli.workload {
            Workload::Room {
                senders,
                receivers,
                window,
                rate,
                messages,
                text_bytes,
                stall_secs,
            } => {
                let p = RoomParams {
                    senders: *senders,
                    receivers: *receivers,
                    window: *window,
                    rate: (*rate > 0.0).then_some(*rate),
                    messages: *messages,
                    text_bytes: *text_bytes,
                    stall: Duration::from_secs(*stall_secs),
                };
                veche_bench::room(&target, &p).await?.report
            }
            Workload::Idle {
                connections,
                parallel,
                hold_secs,
                per_endpoint,
            } => {
                let p = IdleParams {
                    connections: *connections,
                    parallel: *parallel,
                    hold: Duration::from_secs(*hold_secs),
                    per_endpoint: *per_endpoint,
                };
                veche_bench::idle(&target, &p).await?
            }
            Workload::Logins {
                rate,
                count,
                resumes,
                resume_rate,
                parallel,
            } => {
                let p = LoginParams {
                    rate: (*rate > 0.0).then_some(*rate),
                    logins: *count,
                    resumes: *resumes,
                    resume_rate: (*resume_rate > 0.0).then_some(*resume_rate),
                    parallel: *parallel,
                };
                veche_bench::logins(&target, &p).await?
            }
            Workload::Search {
                queries,
                parallel,
                corpus,
            } => {
                let p = SearchParams {
                    queries: *queries,
                    parallel: *parallel,
                    corpus: *corpus,
                    ..SearchParams::default()
                };
                veche_bench::search(&target, &p).await?
            }
            Workload::Mixed {
                users,
                groups,
                group_size,
                secs,
                message_rate,
                presence_rate,
                parallel,
            } => {
                let p = MixedParams {
                    users: *users,
                    groups: *groups,
                    group_size: *group_size,
                    duration: Duration::from_secs(*secs),
                    message_rate: *message_rate,
                    presence_rate: *presence_rate,
                    parallel: *parallel,
                };
                veche_bench::mixed(&target, &p).await?
            }
            Workload::Fsync { .. } | Workload::Median { .. } => unreachable!("handled above"),
        };
        emit(
            g,
            &report,
            &format!("{} (run {run} of {})", report.workload, g.repeat.max(1)),
        )?;
        runs.push(report);
    }
    if runs.len() > 1
        && let Some(median) = Report::median_of(&runs)
    {
        emit(
            g,
            &median,
            &format!("{}: median of {} runs", median.workload, runs.len()),
        )?;
    }
    Ok(())
}

/// Prints a report as text, and as a JSON line where --json says.
fn emit(g: &Global, report: &Report, title: &str) -> anyhow::Result<()> {
    let mut json = report.to_json();
    json["title"] = title.into();
    let line = format!("{json}\n");
    match g.json.as_deref() {
        Some(path) if path == std::path::Path::new("-") => {
            std::io::stdout().write_all(line.as_bytes())?;
            return Ok(());
        }
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.write_all(line.as_bytes())?;
        }
        None => {}
    }
    report.write_text(title, &mut std::io::stdout())?;
    Ok(())
}

/// The node under test, from the options.
async fn target(g: &Global, threads: usize) -> anyhow::Result<Target> {
    let trust = if let Some(fp) = &g.fingerprint {
        Trust::Fingerprint(fp.clone())
    } else if let Some(ca) = &g.ca {
        Trust::CaFile(ca.clone())
    } else if let Some(data) = &g.data {
        Trust::CaFile(data.join("tls").join("ca.pem"))
    } else {
        anyhow::bail!("say how to trust the node: --data, --ca or --fingerprint");
    };
    let mut client = ClientConfig::new(g.addr, trust);
    client.server_name = g.server_name.clone();
    client.client_name = concat!("veche-bench/", env!("CARGO_PKG_VERSION")).to_owned();
    client.timeout = Duration::from_secs(g.request_timeout);
    let socket = g
        .admin_socket
        .clone()
        .or_else(|| g.data.as_ref().map(|d| d.join("admin.sock")));
    let admin = match (&g.admin_login, &g.admin_password, &socket) {
        (Some(login), Some(password), _) => AdminAccess::Account {
            login: login.clone(),
            password: password.clone(),
        },
        (None, _, Some(socket)) => AdminAccess::Socket(socket.clone()),
        _ => anyhow::bail!(
            "say how to create users: --data or --admin-socket (a local node), or --admin-login"
        ),
    };
    let node_pid = match (g.node_pid, &socket) {
        (Some(pid), _) => Some(pid),
        (None, Some(socket)) => veche_bench::target::pid_from_socket(socket).await,
        (None, None) => None,
    };
    Ok(Target {
        client,
        admin,
        node_pid,
        prefix: g.prefix.clone(),
        password: g.password.clone(),
        threads,
    })
}
