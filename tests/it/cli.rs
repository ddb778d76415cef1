use anyhow::Context;
use veche_client::protocol::close;
use veche_node::RunningNode;
use veche_node::data_dir::DataDir;
use veche_node::test_utils::test_config;

use crate::support::{PASSWORD, subscribe, veche, within};

#[tokio::test]
async fn config_check_names_the_bad_key_and_prints_the_effective_config() -> anyhow::Result<()> {
    let _guard = subscribe();
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = \"not an address\"\n")?;
    let err = veche(&[
        "config",
        "check",
        "--config",
        bad.to_str().context("utf-8 path")?,
    ])
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("server.listen"), "{text}");
    assert!(text.contains("bad.toml"), "{text}");

    std::fs::write(&bad, "[auth]\nargon2_iterations = 1\n")?;
    let err = veche(&[
        "config",
        "check",
        "--config",
        bad.to_str().context("utf-8 path")?,
    ])
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("auth.argon2_iterations"),
        "{err:#}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:5555\"\n")?;
    let out = veche(&[
        "config",
        "check",
        "--config",
        good.to_str().context("utf-8 path")?,
    ])
    .await?;
    assert!(out.contains("listen = \"127.0.0.1:5555\""), "{out}");
    assert!(out.contains("argon2_memory_kib = 19456"), "{out}");
    Ok(())
}

#[tokio::test]
async fn admin_commands_work_offline_and_through_the_running_node() -> anyhow::Result<()> {
    let _guard = subscribe();
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_str().context("utf-8 path")?.to_owned();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let pw = pw.to_str().context("utf-8 path")?.to_owned();

    // Offline: the node is not running; the command opens the data folder itself.
    let out = veche(&[
        "admin",
        "--data",
        &data,
        "user",
        "add",
        "root",
        "--admin",
        "--password-file",
        &pw,
    ])
    .await?;
    assert!(out.contains("admin"), "{out}");
    let list = veche(&["admin", "--data", &data, "user", "list"]).await?;
    assert!(list.contains("root@"), "{list}");

    // Online: the same commands go through the admin socket.
    let mut config = test_config();
    config.node.name = None; // keep the name fixed by the offline command
    let node = RunningNode::start(config, DataDir::create(dir.path())?).await?;
    assert!(
        node.info().setup_token.is_none(),
        "users exist, so no setup token"
    );
    let out = veche(&[
        "admin",
        "--data",
        &data,
        "user",
        "add",
        "kate",
        "--name",
        "Kate",
        "--password-file",
        &pw,
    ])
    .await?;
    assert!(out.contains("Kate"), "{out}");

    let config = veche_client::ClientConfig::new(
        node.quic_addr(),
        veche_client::Trust::CaFile(dir.path().join("tls/ca.pem")),
    );
    let conn = within(15, "connect", veche_client::Connection::connect(&config)).await??;
    conn.login("kate", PASSWORD, "d", "d").await?;

    let sessions = veche(&["admin", "--data", &data, "user", "sessions", "kate"]).await?;
    assert_eq!(sessions.lines().count(), 1, "{sessions}");
    let out = veche(&["admin", "--data", &data, "user", "revoke", "kate"]).await?;
    assert!(out.contains("1 session"), "{out}");
    let reason = within(5, "revoked connection closes", conn.closed()).await?;
    assert_eq!(reason.code, Some(u64::from(close::SESSION_REVOKED)));

    let audit = veche(&["admin", "--data", &data, "audit"]).await?;
    for action in ["user.add", "session.create", "session.revoke"] {
        assert!(audit.contains(action), "{action} missing from\n{audit}");
    }
    assert!(
        audit.contains("admin-socket") && audit.contains("cli"),
        "{audit}"
    );

    let missing = veche(&["admin", "--data", &data, "user", "lock", "nobody"])
        .await
        .unwrap_err();
    assert!(format!("{missing:#}").contains("not found"), "{missing:#}");

    node.shutdown().await;
    // Stopped again: offline mode works on the same folder.
    let list = veche(&["admin", "--data", &data, "user", "list"]).await?;
    assert!(list.contains("kate@"), "{list}");
    Ok(())
}
