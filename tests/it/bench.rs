//! The external load generator (`veche-bench`) against a real node: what it counts must be
//! true. Correctness only; its figures are for BENCHMARKS.md, never asserted here.

use std::time::Duration;

use veche_bench::{AdminAccess, RoomParams, Target};
use veche_client::{ClientConfig, Trust};
use veche_node::test_utils::TestNode;

use crate::support::{subscribe, within};

fn target(node: &TestNode) -> Target {
    Target {
        client: ClientConfig::new(node.quic_addr(), Trust::CaFile(node.ca_path())),
        admin: AdminAccess::Socket(node.data_dir().join("admin.sock")),
        node_pid: None,
        prefix: "bench".to_owned(),
        password: "bench password".to_owned(),
        threads: 2,
    }
}

#[tokio::test]
async fn the_room_workload_delivers_every_message_once_to_every_receiver() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let mut target = target(&node);
    // The node serves the admin socket from this very process: its credentials say so.
    target.node_pid =
        veche_bench::target::pid_from_socket(&node.data_dir().join("admin.sock")).await;
    assert_eq!(target.node_pid, Some(std::process::id()));

    let params = RoomParams {
        senders: 2,
        receivers: 2,
        window: 8,
        rate: None,
        messages: 50,
        text_bytes: 60,
        stall: Duration::from_secs(20),
    };
    let outcome = within(120, "room workload", veche_bench::room(&target, &params)).await??;
    assert_eq!(outcome.messages, 50);
    assert_eq!(
        outcome.delivered,
        vec![50, 50],
        "{:?}",
        outcome.report.notes()
    );
    assert_eq!(outcome.duplicates, 0);
    assert_eq!(outcome.report.get("deliveries_missing"), Some(0.0));
    assert!(outcome.report.get("node_cpu_s").is_some());

    // A second run on the same node reuses the users and makes a new group.
    let again = within(
        120,
        "room workload again",
        veche_bench::room(&target, &params),
    )
    .await??;
    assert_eq!(again.delivered, vec![50, 50], "{:?}", again.report.notes());
    assert_eq!(again.duplicates, 0);
    Ok(())
}
