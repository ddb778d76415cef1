//! Files against a real node: uploads and downloads on QUIC transfer streams, resumption after
//! a cut connection, hash checks, the administrator's policy rule by rule, clean-up after
//! deletion, previews, migration to a storage-backend plugin and back while files are read,
//! and a 200 MB upload with the node's memory bounded.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use veche_client::protocol::admin::{AdminReply, AdminRequest};
use veche_client::protocol::discussions::{Change, DiscussionInfo, Message};
use veche_client::protocol::files::{
    FileInfo, MAX_TRANSFER_FRAME, NewUpload, TransferReply, TransferRequest, UploadInfo,
};
use veche_client::protocol::{ErrorBody, ErrorCode, Reply, Request, frame};
use veche_client::{Connection, RequestError, TransferError};
use veche_node::config::Config;
use veche_node::test_utils::{TestNode, plugin_folder, test_config};

use crate::generated::Generated;
use crate::support::*;

/// Deterministic, incompressible bytes.
pub(crate) fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(crate) fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn group(owner: &Connection, members: &[&str]) -> anyhow::Result<DiscussionInfo> {
    discussion(
        owner,
        Request::CreateGroup {
            title: "Документы".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        },
    )
    .await
}

/// Declares an upload of `data`.
async fn declare(
    conn: &Connection,
    discussion: &str,
    name: &str,
    data: &[u8],
) -> Result<UploadInfo, RequestError> {
    conn.create_upload(NewUpload {
        discussion: discussion.to_owned(),
        name: name.to_owned(),
        size: data.len() as u64,
        sha256: sha(data),
    })
    .await
}

pub(crate) async fn upload(
    conn: &Connection,
    discussion: &str,
    name: &str,
    data: &[u8],
) -> Result<FileInfo, TransferError> {
    let up = declare(conn, discussion, name, data).await?;
    conn.send_upload(&up.id, 0, data, |_| {}).await
}

pub(crate) async fn download(conn: &Connection, file: &str) -> Result<Vec<u8>, TransferError> {
    let mut out = Vec::new();
    conn.download(file, 0, false, &mut out).await?;
    Ok(out)
}

/// The node's refusal in a failed transfer or request.
pub(crate) fn refusal(e: TransferError) -> anyhow::Result<ErrorBody> {
    match e {
        TransferError::Refused(body) | TransferError::Request(RequestError::Server(body)) => {
            Ok(body)
        }
        other => bail!("expected a refusal, got {other:?}"),
    }
}

pub(crate) async fn send_files(
    conn: &Connection,
    discussion: &str,
    id: &str,
    text: &str,
    files: &[&str],
) -> anyhow::Result<Result<String, ErrorBody>> {
    let mut m = message(discussion, id, text);
    m.files = files.iter().map(|f| (*f).to_owned()).collect();
    match within(15, "send", conn.request(Request::Send(m))).await? {
        Ok(Reply::Sent { message_id, .. }) => Ok(Ok(message_id)),
        Ok(other) => bail!("expected sent, got {other:?}"),
        Err(RequestError::Server(body)) => Ok(Err(body)),
        Err(e) => Err(e.into()),
    }
}

/// Posts with files; a refusal fails the test.
pub(crate) async fn sent(
    conn: &Connection,
    discussion: &str,
    id: &str,
    text: &str,
    files: &[&str],
) -> anyhow::Result<String> {
    send_files(conn, discussion, id, text, files)
        .await?
        .map_err(|e| anyhow::anyhow!("refused: {e:?}"))
}

/// Logs `name` in over HTTP as device `device`; returns the session token.
pub(crate) async fn http_token(
    node: &TestNode,
    name: &str,
    device: &str,
) -> anyhow::Result<String> {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/login", node.http_url()))
        .json(&serde_json::json!({"login": name, "password": PASSWORD, "device_id": device}))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["session_token"].as_str().context("token")?.to_owned())
}

async fn posted(conn: &Connection, id: &str) -> anyhow::Result<Message> {
    loop {
        let event = next_discussion_event(conn).await?;
        if let Change::MessagePosted { message } = event.change
            && message.id == id
        {
            return Ok(*message);
        }
    }
}

/// Files under the node's own content folder (not staging).
fn stored_contents(node: &TestNode) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let root = node.data_dir().join("files/blobs");
    for dir in std::fs::read_dir(&root)? {
        for f in std::fs::read_dir(dir?.path())? {
            out.push(f?.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn png(width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[tokio::test]
async fn upload_attach_download_dedupe_and_preview() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut config = veche_node::test_utils::test_config();
    config.metrics.enabled = true;
    config.metrics.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let node = TestNode::spawn_with(config).await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let carol = user(&node, "carol").await?;
    let g = group(&alice, &["bob"]).await?;

    let data = content(1, 3 * 1024 * 1024 + 17);
    let file = within(
        60,
        "upload",
        upload(&alice, &g.id, "../Счёт №42.bin", &data),
    )
    .await??;
    assert_eq!(file.name, "Счёт №42.bin", "the folder part is dropped");
    assert_eq!(
        (file.size, file.sha256.as_str()),
        (data.len() as u64, sha(&data).as_str())
    );
    assert_eq!(file.mime, "application/octet-stream");
    assert!(!file.thumbnail);
    let metrics = node.metrics_url().context("no metrics listener")?;
    let stored = crate::metrics::scrape(&metrics)
        .await?
        .get("veche_file_bytes_stored", &[("backend", "fs")]);
    assert_eq!(
        stored,
        data.len() as f64,
        "the metrics count the stored bytes"
    );

    // Before it is attached, only its uploader may read it.
    assert_eq!(alice.file_info(&file.id).await?.id, file.id);
    let e = refusal(download(&bob, &file.id).await.unwrap_err())?;
    assert_eq!(e.code, ErrorCode::NotFound);
    // Someone else's file cannot be attached.
    let e = send_files(&bob, &g.id, "b1", "mine now", &[&file.id])
        .await?
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);

    let id = sent(&alice, &g.id, "a1", "счёт во вложении", &[&file.id]).await?;
    let seen = posted(&bob, &id).await?;
    assert_eq!(seen.files.len(), 1);
    assert_eq!(seen.files[0].id, file.id);
    // Bob reads it; so does the message from history.
    assert_eq!(
        within(60, "download", download(&bob, &file.id)).await??,
        data
    );
    let history = ask(
        &bob,
        Request::History {
            discussion: g.id.clone(),
            before: None,
            limit: 10,
        },
    )
    .await?;
    let Reply::Events { events, .. } = history else {
        bail!("expected events")
    };
    assert!(events.iter().any(|e| matches!(&e.change,
        Change::MessagePosted { message } if message.files.first().map(|f| &f.id) == Some(&file.id))));
    // A download resumes from an offset.
    let mut tail = Vec::new();
    let (_, n) = bob.download(&file.id, 1_000_000, false, &mut tail).await?;
    assert_eq!(
        (n as usize, &tail[..]),
        (data.len() - 1_000_000, &data[1_000_000..])
    );
    // Carol is in no discussion with it: the id alone gives her nothing.
    let e = refusal(download(&carol, &file.id).await.unwrap_err())?;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = carol.file_info(&file.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // The same content again is a new file with the same content, stored once.
    let again = upload(&alice, &g.id, "copy.bin", &data).await?;
    assert_ne!(again.id, file.id);
    assert_eq!(again.sha256, file.sha256);
    assert_eq!(stored_contents(&node)?, vec![file.sha256.clone()]);

    // An image gets a preview and its dimensions.
    let picture = png(640, 480)?;
    let img = upload(&alice, &g.id, "plan.png", &picture).await?;
    assert_eq!(
        (img.mime.as_str(), img.thumbnail, img.dimensions),
        ("image/png", true, Some((640, 480)))
    );
    let id = sent(&alice, &g.id, "a2", "", &[&img.id]).await?;
    posted(&bob, &id).await?;
    let mut thumb = Vec::new();
    let (_, _) = bob.download(&img.id, 0, true, &mut thumb).await?;
    let decoded = image::load_from_memory(&thumb)?;
    assert_eq!((decoded.width(), decoded.height()), (320, 240));
    Ok(())
}

#[tokio::test]
async fn an_upload_resumes_after_a_cut_connection() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    node.add_user("alice", PASSWORD, false).await?;
    let (alice, _) = login(&node, "alice", PASSWORD, "laptop").await?;
    let g = group(&alice, &[]).await?;
    let data = content(2, 8 * 1024 * 1024);
    let up = declare(&alice, &g.id, "архив.zip", &data).await?;

    // Three megabytes by hand on a transfer stream, then the connection is cut.
    let (mut send, mut recv) = alice.quic().open_bi().await?;
    let header = TransferRequest::Upload {
        upload: up.id.clone(),
        offset: 0,
    };
    frame::write(&mut send, &header, MAX_TRANSFER_FRAME).await?;
    send.write_all(&data[..3 * 1024 * 1024]).await?;
    let confirmed = within(30, "progress", async {
        loop {
            match frame::read::<TransferReply, _>(&mut recv, MAX_TRANSFER_FRAME).await? {
                Some(TransferReply::Progress { confirmed }) if confirmed >= 1024 * 1024 => {
                    return anyhow::Ok(confirmed);
                }
                Some(TransferReply::Progress { .. }) => {}
                other => bail!("expected progress, got {other:?}"),
            }
        }
    })
    .await??;
    alice.quic().close(0u32.into(), b"cable pulled");
    drop(alice);

    let (alice, _) = login(&node, "alice", PASSWORD, "laptop").await?;
    // The node keeps what it confirmed (and maybe a little more, once the cut is noticed).
    // The close packet may never leave (the client is dropped at once, as a pulled cable
    // would): then the node notices by the connection's idle timeout, 30 s.
    let status = eventually(45, "the cut upload is no longer busy", async || {
        let s = alice.upload_status(&up.id).await?;
        let busy = alice
            .send_upload(&up.id, s.confirmed, &[][..], |_| {})
            .await
            .err()
            .and_then(|e| refusal(e).ok())
            .is_some_and(|b| b.code == ErrorCode::Unavailable);
        if busy {
            bail!("the upload is still being written");
        }
        Ok(alice.upload_status(&up.id).await?)
    })
    .await?;
    let at = status.confirmed;
    assert!(at >= confirmed && at <= 3 * 1024 * 1024, "resumes at {at}");
    assert!(status.file.is_none());
    // The wrong offset is refused with the right one.
    let e = refusal(
        alice
            .send_upload(&up.id, 0, &data[..], |_| {})
            .await
            .unwrap_err(),
    )?;
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains(&format!("byte {at}")), "{}", e.message);

    let mut seen = Vec::new();
    let file = within(
        60,
        "resumed upload",
        alice.send_upload(&up.id, at, &data[at as usize..], |c| seen.push(c)),
    )
    .await??;
    assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen.last() == Some(&(data.len() as u64)));
    assert_eq!(file.sha256, sha(&data));
    assert_eq!(download(&alice, &file.id).await?, data);
    let done = alice.upload_status(&up.id).await?;
    assert_eq!(done.file.map(|f| f.id), Some(file.id));
    Ok(())
}

#[tokio::test]
async fn a_wrong_hash_or_size_is_refused_and_nothing_is_kept() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let data = content(3, 300_000);
    let mut other = data.clone();
    other[123_456] ^= 1;
    let up = declare(&alice, &g.id, "a.bin", &data).await?;
    let e = refusal(
        alice
            .send_upload(&up.id, 0, &other[..], |_| {})
            .await
            .unwrap_err(),
    )?;
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("SHA-256"), "{}", e.message);
    let gone = alice.upload_status(&up.id).await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NotFound));
    assert!(stored_contents(&node)?.is_empty());
    let staging = std::fs::read_dir(node.data_dir().join("files/uploads"))?.count();
    assert_eq!(staging, 0);

    // More bytes than declared.
    let up = declare(&alice, &g.id, "b.bin", &data[..1000]).await?;
    let e = refusal(
        alice
            .send_upload(&up.id, 0, &data[..2000], |_| {})
            .await
            .unwrap_err(),
    )?;
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.contains("declared as 1000 bytes"),
        "{}",
        e.message
    );

    // A malformed declaration.
    let e = alice
        .create_upload(NewUpload {
            discussion: g.id.clone(),
            name: "c.bin".into(),
            size: 1,
            sha256: "ABC".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    // Garbage instead of a transfer header gets an error frame; the connection lives on.
    let (mut send, mut recv) = alice.quic().open_bi().await?;
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    send.finish()?;
    match frame::read::<TransferReply, _>(&mut recv, MAX_TRANSFER_FRAME).await? {
        Some(TransferReply::Error { error }) => assert_eq!(error.code, ErrorCode::MalformedFrame),
        other => bail!("expected an error, got {other:?}"),
    }
    assert_eq!(alice.whoami().await?.login, "alice");
    Ok(())
}

fn policy_config(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    f(&mut c);
    c
}

#[tokio::test]
async fn each_policy_rule_refuses_with_its_reason() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn_with(policy_config(|c| {
        c.files.max_size_mb = 1;
        c.files.quota_mb = 2;
        c.files.discussion_kinds = vec!["group".into(), "object".into()];
    }))
    .await?;
    let alice = user(&node, "alice").await?;
    user(&node, "bob").await?;
    let g = group(&alice, &[]).await?;
    let dialog = discussion(&alice, Request::OpenDialog { with: "bob".into() }).await?;

    let rule = |e: TransferError| refusal(e).map(|b| (b.code, b.rule.unwrap_or_default()));
    let forbidden = |r: &str| (ErrorCode::Forbidden, r.to_owned());
    let big = content(4, 1024 * 1024 + 1);
    assert_eq!(
        rule(upload(&alice, &g.id, "big.bin", &big).await.unwrap_err())?,
        forbidden("files.max_size_mb")
    );
    let small = content(5, 900 * 1024);
    assert_eq!(
        rule(
            upload(&alice, &dialog.id, "a.bin", &small)
                .await
                .unwrap_err()
        )?,
        forbidden("files.discussion_kinds")
    );
    assert_eq!(
        rule(upload(&alice, &g.id, "run.BAT", b"echo").await.unwrap_err())?,
        forbidden("files.blocked_extensions")
    );
    // A program named like a document is still a program.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    elf.extend(content(6, 5000));
    assert_eq!(
        rule(upload(&alice, &g.id, "report.pdf", &elf).await.unwrap_err())?,
        forbidden("files.blocked_types")
    );
    assert_eq!(
        rule(
            upload(&alice, &g.id, "notes.txt", b"#!/bin/sh\nrm -rf ~\n")
                .await
                .unwrap_err()
        )?,
        forbidden("files.blocked_types")
    );
    // The quota counts files kept and uploads in progress.
    upload(&alice, &g.id, "one.bin", &small).await?;
    let pending = declare(&alice, &g.id, "two.bin", &content(7, small.len())).await?;
    assert_eq!(
        rule(
            upload(&alice, &g.id, "three.bin", &content(8, 300 * 1024))
                .await
                .unwrap_err()
        )?,
        forbidden("files.quota_mb")
    );
    let Reply::FilePolicy { policy } = ask(&alice, Request::FilePolicy).await? else {
        bail!("expected the policy")
    };
    assert_eq!(
        (policy.max_size, policy.quota, policy.used),
        (1 << 20, 2 << 20, 2 * small.len() as u64)
    );
    // Cancelling the upload in progress frees its share.
    ask(&alice, Request::CancelUpload { upload: pending.id }).await?;
    upload(&alice, &g.id, "three.bin", &content(8, 300 * 1024)).await?;

    // Only images, on another node; and no files at all on a third.
    let images = TestNode::spawn_with(policy_config(|c| {
        c.files.allowed_types = vec!["image/*".into()]
    }))
    .await?;
    let alice2 = user(&images, "alice").await?;
    let g2 = group(&alice2, &[]).await?;
    assert_eq!(
        rule(
            upload(&alice2, &g2.id, "a.txt", "текст".as_bytes())
                .await
                .unwrap_err()
        )?,
        forbidden("files.allowed_types")
    );
    upload(&alice2, &g2.id, "a.png", &png(4, 4)?).await?;
    let none = TestNode::spawn_with(policy_config(|c| c.files.enabled = false)).await?;
    let alice3 = user(&none, "alice").await?;
    let g3 = group(&alice3, &[]).await?;
    assert_eq!(
        rule(
            upload(&alice3, &g3.id, "a.png", &png(4, 4)?)
                .await
                .unwrap_err()
        )?,
        forbidden("files.enabled")
    );
    Ok(())
}

#[tokio::test]
async fn deleting_the_last_message_frees_the_file() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let g = group(&alice, &["bob"]).await?;
    let data = content(9, 100_000);
    let file = upload(&alice, &g.id, "a.bin", &data).await?;
    let first = sent(&alice, &g.id, "m1", "first", &[&file.id]).await?;
    let second = sent(&alice, &g.id, "m2", "again", &[&file.id]).await?;
    posted(&bob, &second).await?;
    let cleanup = async || match node.admin(AdminRequest::FilesCleanup).await? {
        AdminReply::FilesCleaned { files, contents } => anyhow::Ok((files, contents)),
        other => bail!("expected a clean-up, got {other:?}"),
    };

    for (message, readable) in [(&first, true), (&second, false)] {
        ask(
            &alice,
            Request::Delete {
                discussion: g.id.clone(),
                message_id: message.clone(),
            },
        )
        .await?;
        let read = download(&bob, &file.id).await;
        assert_eq!(read.is_ok(), readable, "after deleting {message}: {read:?}");
    }
    assert_eq!(cleanup().await?, (1, 1));
    assert!(stored_contents(&node)?.is_empty());
    let e = refusal(download(&alice, &file.id).await.unwrap_err())?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(cleanup().await?, (0, 0));
    Ok(())
}

/// Installs the shipped `fs-store` storage backend.
async fn install_fs_store(node: &TestNode) -> anyhow::Result<()> {
    let folder = plugin_folder("fs-store")?;
    node.admin(AdminRequest::PluginInstall {
        path: folder.path().display().to_string(),
        grants: vec!["filesystem".into()],
        config: Default::default(),
    })
    .await?;
    Ok(())
}

pub(crate) async fn files_status(node: &TestNode) -> anyhow::Result<(String, Vec<(String, u64)>)> {
    match node.admin(AdminRequest::FilesStatus).await? {
        AdminReply::Files { current, backends } => Ok((
            current,
            backends
                .into_iter()
                .map(|b| (b.backend, b.contents))
                .collect(),
        )),
        other => bail!("expected a status, got {other:?}"),
    }
}

async fn migrate(node: &TestNode, to: &str) -> anyhow::Result<u64> {
    match node
        .admin(AdminRequest::FilesMigrate { to: to.into() })
        .await?
    {
        AdminReply::FilesMigrated { moved, failed, .. } if failed.is_empty() => Ok(moved),
        other => bail!("expected a clean migration, got {other:?}"),
    }
}

#[tokio::test]
async fn migration_to_a_plugin_backend_and_back_keeps_every_file_readable() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut node = TestNode::spawn().await?;
    install_fs_store(&node).await?;
    let alice = user(&node, "alice").await?;
    let bob = user(&node, "bob").await?;
    let g = group(&alice, &["bob"]).await?;
    let mut files = Vec::new();
    for (i, data) in [content(10, 700_000), content(11, 5), png(100, 50)?]
        .into_iter()
        .enumerate()
    {
        let f = upload(&alice, &g.id, &format!("f{i}.bin"), &data).await?;
        sent(&alice, &g.id, &format!("m{i}"), "файл", &[&f.id]).await?;
        files.push((f, data));
    }
    assert_eq!(
        files_status(&node).await?,
        ("fs".into(), vec![("fs".into(), 3)])
    );

    // Bob keeps downloading while the contents move.
    let reader = async {
        for _ in 0..5 {
            for (f, data) in &files {
                assert_eq!(&download(&bob, &f.id).await?, data);
            }
        }
        anyhow::Ok(())
    };
    let (moved, read) = tokio::join!(migrate(&node, "plugin:fs-store"), reader);
    read?;
    assert_eq!(moved?, 3);
    assert!(
        stored_contents(&node)?.is_empty(),
        "nothing is left in files/"
    );
    assert_eq!(
        files_status(&node).await?,
        (
            "plugin:fs-store".into(),
            vec![("plugin:fs-store".into(), 3)]
        )
    );
    let later = content(12, 400_000);
    let f = upload(&alice, &g.id, "later.bin", &later).await?;
    sent(&alice, &g.id, "m9", "ещё", &[&f.id]).await?;
    files.push((f, later));

    // The choice survives a restart.
    node.restart().await?;
    let bob = user_again(&node, "bob").await?;
    for (f, data) in &files {
        assert_eq!(&download(&bob, &f.id).await?, data);
    }
    let mut thumb = Vec::new();
    bob.download(&files[2].0.id, 0, true, &mut thumb).await?;
    assert!(image::load_from_memory(&thumb).is_ok());
    assert_eq!(files_status(&node).await?.0, "plugin:fs-store");

    assert_eq!(migrate(&node, "fs").await?, 4);
    assert_eq!(
        stored_contents(&node)?.len(),
        5,
        "four contents and one preview"
    );
    for (f, data) in &files {
        assert_eq!(&download(&bob, &f.id).await?, data);
    }
    // An unknown backend is refused before anything moves.
    let e = node
        .admin(AdminRequest::FilesMigrate {
            to: "plugin:nope".into(),
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(files_status(&node).await?.0, "fs");
    Ok(())
}

pub(crate) async fn user_again(node: &TestNode, name: &str) -> anyhow::Result<Connection> {
    Ok(login(node, name, PASSWORD, &format!("{name}-device"))
        .await?
        .0)
}

/// The peak and current resident set of this process, in KiB.
fn memory() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?)
    };
    Ok((field("VmHWM:")?, field("VmRSS:")?))
}

const BIG: u64 = 200 * 1024 * 1024;
/// Set in the child process of the 200 MB test.
const BIG_CHILD: &str = "VECHE_TEST_BIG_UPLOAD_CHILD";

/// The 200 MB upload and download, measured in a process of its own.
async fn big_upload() -> anyhow::Result<()> {
    let node = TestNode::spawn_with(policy_config(|c| c.files.max_size_mb = 256)).await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let source = || Generated::new(BIG, 0x1234_5678_9abc_def1);
    let (sha256, size) = veche_client::sha256_of(source()).await?;
    assert_eq!(size, BIG);
    let (_, before) = memory()?;
    let up = alice
        .create_upload(NewUpload {
            discussion: g.id.clone(),
            name: "big.bin".into(),
            size,
            sha256: sha256.clone(),
        })
        .await?;
    let file = within(
        600,
        "200 MB upload",
        alice.send_upload(&up.id, 0, source(), |_| {}),
    )
    .await??;
    assert_eq!(file.sha256, sha256);
    // Downloaded into a hasher: verified by the client, nothing kept.
    let mut sink = tokio::io::sink();
    let (_, n) = within(
        600,
        "200 MB download",
        alice.download(&file.id, 0, false, &mut sink),
    )
    .await??;
    assert_eq!(n, BIG);
    let (peak, _) = memory()?;
    let growth_mb = peak.saturating_sub(before) / 1024;
    println!("rss-growth-mb={growth_mb}");
    assert!(
        growth_mb < 100,
        "the resident set grew by {growth_mb} MB for a 200 MB file"
    );
    Ok(())
}

#[tokio::test]
async fn a_200_mb_upload_keeps_the_node_memory_bounded() -> anyhow::Result<()> {
    // The test binary runs this test again, alone, so that the process's memory is the
    // node's and the client's only.
    if std::env::var_os(BIG_CHILD).is_some() {
        return big_upload().await;
    }
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(&exe)
        .args([
            "--exact",
            "files::a_200_mb_upload_keeps_the_node_memory_bounded",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BIG_CHILD, "1")
        .output();
    let output = within(900, "the child test", output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("rss-growth-mb=") && stdout.contains("1 passed"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn search_finds_messages_by_their_files() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let f = upload(&alice, &g.id, "Акт сверки март.pdf", b"%PDF-1.4 not really").await?;
    let with_file = sent(&alice, &g.id, "m1", "", &[&f.id]).await?;
    post(&alice, &g.id, "m2", "акт сверки обсудим завтра").await?;
    let search = async |text: &str, has_file: bool| {
        let mut q = veche_client::protocol::discussions::SearchQuery::text(text);
        q.has_file = has_file;
        match ask(&alice, Request::Search(q)).await? {
            Reply::SearchResults { hits, .. } => {
                anyhow::Ok(hits.into_iter().map(|h| h.message_id).collect::<Vec<_>>())
            }
            other => bail!("expected results, got {other:?}"),
        }
    };
    let both = eventually(15, "both messages indexed", async || {
        let hits = search("акты сверки", false).await?;
        anyhow::ensure!(hits.len() == 2, "{hits:?}");
        Ok(hits)
    })
    .await?;
    assert!(both.contains(&with_file));
    assert_eq!(search("акты сверки", true).await?, vec![with_file]);
    Ok(())
}

#[tokio::test]
async fn files_over_http_resume_and_download_with_ranges() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    user(&node, "carol").await?;
    let g = group(&alice, &[]).await?;
    let http = reqwest::Client::new();
    let base = node.http_url();
    let login = async |name: &str| {
        let device = format!("{name}-web");
        anyhow::Ok((http_token(&node, name, &device).await?, device))
    };
    let (token, device) = login("alice").await?;
    let authed = |b: reqwest::RequestBuilder| b.bearer_auth(&token).header("Veche-Device", &device);

    // Larger than the gateway's JSON body limit: file bodies are streamed, not limited by it.
    let data = content(20, 3 * 1024 * 1024);
    let r = authed(http.post(format!("{base}/api/v1/uploads")))
        .json(&serde_json::json!({"discussion": g.id, "name": "отчёт.html", "size": data.len(), "sha256": sha(&data)}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let up: serde_json::Value = r.json().await?;
    let id = up["id"].as_str().context("upload id")?.to_owned();
    let half = 1_500_000;
    let r = authed(http.put(format!("{base}/api/v1/uploads/{id}?offset=0")))
        .body(data[..half].to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let status: serde_json::Value = r.json().await?;
    assert_eq!(status["confirmed"], half);
    let r = authed(http.put(format!("{base}/api/v1/uploads/{id}?offset={half}")))
        .body(data[half..].to_vec())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let file: serde_json::Value = r.json().await?;
    let file_id = file["id"].as_str().context("file id")?.to_owned();
    assert_eq!(file["sha256"], sha(&data));
    let r = authed(http.post(format!("{base}/api/v1/discussions/{}/messages", g.id)))
        .json(&serde_json::json!({"client_msg_id": "h1", "text": "отчёт", "files": [file_id]}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    let r = authed(http.get(format!("{base}/api/v1/files/{file_id}")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["content-type"], "application/octet-stream",
        "HTML is never served as HTML"
    );
    let disposition = h["content-disposition"].to_str()?;
    assert!(
        disposition.starts_with("attachment;") && disposition.contains("filename*=UTF-8''%D0%BE"),
        "{disposition}"
    );
    assert_eq!(h["etag"].to_str()?, format!("\"{}\"", sha(&data)));
    assert_eq!(r.bytes().await?.as_ref(), &data[..]);
    let r = authed(http.get(format!("{base}/api/v1/files/{file_id}")))
        .header("Range", "bytes=3000000-")
        .send()
        .await?;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await?.as_ref(), &data[3_000_000..]);

    // A refusal names its rule; a stranger's download is not found.
    let r = authed(http.post(format!("{base}/api/v1/uploads")))
        .json(&serde_json::json!({"discussion": g.id, "name": "setup.exe", "size": 10, "sha256": sha(b"0123456789")}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["rule"], "files.blocked_extensions");
    let (carol_token, carol_device) = login("carol").await?;
    let r = http
        .get(format!("{base}/api/v1/files/{file_id}"))
        .bearer_auth(&carol_token)
        .header("Veche-Device", &carol_device)
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    Ok(())
}

#[tokio::test]
async fn a_damaged_content_is_never_delivered_as_whole() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let data = content(30, 1_000_000);
    let f = upload(&alice, &g.id, "a.bin", &data).await?;
    sent(&alice, &g.id, "m1", "файл", &[&f.id]).await?;
    // Same size, one byte different, behind the node's back.
    let path = node
        .data_dir()
        .join("files/blobs")
        .join(&f.sha256[..2])
        .join(&f.sha256);
    let mut damaged = std::fs::read(&path)?;
    damaged[999_999] ^= 0xff;
    std::fs::write(&path, &damaged)?;

    let e = download(&alice, &f.id).await.unwrap_err();
    assert!(matches!(e, TransferError::Stream(_)), "{e:?}");
    // Nor does resuming near the end complete it.
    let mut tail = Vec::new();
    let e = alice
        .download(&f.id, 999_000, false, &mut tail)
        .await
        .unwrap_err();
    assert!(matches!(e, TransferError::Stream(_)), "{e:?}");
    // Over HTTP the body breaks off before its last byte instead of completing.
    let token = http_token(&node, "alice", "web").await?;
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{}", node.http_url(), f.id))
        .bearer_auth(&token)
        .header("Veche-Device", "web")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    if let Ok(body) = r.bytes().await {
        assert!(
            body.len() < data.len(),
            "a whole damaged body was delivered"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_resent_message_is_answered_even_after_its_file_is_gone() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let f = upload(&alice, &g.id, "a.bin", &content(31, 1000)).await?;
    let id = sent(&alice, &g.id, "m1", "с файлом", &[&f.id]).await?;
    ask(
        &alice,
        Request::Delete {
            discussion: g.id.clone(),
            message_id: id.clone(),
        },
    )
    .await?;
    node.admin(AdminRequest::FilesCleanup).await?;
    // The client did not get the first answer and sends again: same key, same content.
    assert_eq!(sent(&alice, &g.id, "m1", "с файлом", &[&f.id]).await?, id);
    // A new message cannot use the removed file.
    let e = send_files(&alice, &g.id, "m2", "ещё", &[&f.id])
        .await?
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    Ok(())
}

#[tokio::test]
async fn abandoned_downloads_let_go_of_their_content() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    install_fs_store(&node).await?;
    let alice = user(&node, "alice").await?;
    let g = group(&alice, &[]).await?;
    let data = content(32, 8 * 1024 * 1024);
    let f = upload(&alice, &g.id, "big.bin", &data).await?;
    sent(&alice, &g.id, "m1", "файл", &[&f.id]).await?;

    // A QUIC reader that takes the header and a little, then its connection goes away.
    let (reader, _) = login(&node, "alice", PASSWORD, "phone").await?;
    let (mut send, mut recv) = reader.quic().open_bi().await?;
    let header = TransferRequest::Download {
        file: f.id.clone(),
        offset: 0,
        thumbnail: false,
    };
    frame::write(&mut send, &header, MAX_TRANSFER_FRAME).await?;
    send.finish()?;
    let first = frame::read::<TransferReply, _>(&mut recv, MAX_TRANSFER_FRAME).await?;
    assert!(
        matches!(first, Some(TransferReply::Download { .. })),
        "{first:?}"
    );
    let mut some = [0u8; 4096];
    recv.read_exact(&mut some).await?;
    reader.quic().close(0u32.into(), b"gone");
    // An HTTP reader that takes one chunk and leaves.
    let token = http_token(&node, "alice", "web").await?;
    let mut r = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{}", node.http_url(), f.id))
        .bearer_auth(&token)
        .header("Veche-Device", "web")
        .send()
        .await?;
    assert!(r.chunk().await?.is_some());
    drop(r);

    // A migration removes a moved content from its old place only once nobody reads it
    // there (waiting up to a minute): abandoned readers must have let go.
    let moved = within(30, "migration", migrate(&node, "plugin:fs-store")).await??;
    assert_eq!(moved, 1);
    assert!(stored_contents(&node)?.is_empty());
    assert_eq!(download(&alice, &f.id).await?, data);
    Ok(())
}
