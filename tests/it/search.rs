//! Search and the user directory against a real node: morphology, codes, layout correction,
//! access checked against the database as it is now, deletes, restarts and rebuilds.

use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use veche_client::Connection;
use veche_client::protocol::admin::AdminRequest;
use veche_client::protocol::discussions::{ObjectRef, SearchHit, SearchQuery};
use veche_client::protocol::{Reply, Request};
use veche_node::test_utils::TestNode;

use crate::support::*;

fn query(text: &str) -> SearchQuery {
    SearchQuery::text(text)
}

async fn search(
    conn: &Connection,
    q: SearchQuery,
) -> anyhow::Result<(Vec<SearchHit>, Option<String>)> {
    match ask(conn, Request::Search(q)).await? {
        Reply::SearchResults {
            hits,
            corrected_query,
            ..
        } => Ok((hits, corrected_query)),
        other => bail!("expected search results, got {other:?}"),
    }
}

/// Message ids found for `text`, once the index has caught up with `expect` of them.
async fn found(conn: &Connection, text: &str, expect: usize) -> anyhow::Result<Vec<String>> {
    eventually(
        15,
        &format!("search {text:?} to find {expect}"),
        async || {
            let (hits, _) = search(conn, query(text)).await?;
            anyhow::ensure!(hits.len() == expect, "{} hits: {hits:?}", hits.len());
            Ok(hits.into_iter().map(|h| h.message_id).collect())
        },
    )
    .await
}

async fn group(conn: &Connection, title: &str, members: &[&str]) -> anyhow::Result<String> {
    Ok(discussion(
        conn,
        Request::CreateGroup {
            title: title.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        },
    )
    .await?
    .id)
}

#[tokio::test]
async fn russian_and_english_forms_codes_and_the_wrong_layout() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let anna = user(&node, "anna").await?;
    user(&node, "boris").await?;
    let g = group(&anna, "Бухгалтерия", &["boris"]).await?;
    let (invoice, _) = post(
        &anna,
        &g,
        "m1",
        "Выставлен счёт по ПТУ-000123 на 1 250,00 ₽ 👍",
    )
    .await?;
    let (paid, _) = post(&anna, &g, "m2", "Счета за ноябрь оплачены").await?;
    post(&anna, &g, "m3", "The invoices for INV-2026/15 are shipped").await?;
    post(&anna, &g, "m4", "Привет всем!").await?;

    // счёт, счета, счетов: one word.
    let hits = found(&anna, "счетов", 2).await?;
    assert!(hits.contains(&invoice) && hits.contains(&paid));
    found(&anna, "СЧЁТ", 2).await?;
    // Codes whole and by their parts.
    assert_eq!(found(&anna, "ПТУ-000123", 1).await?, vec![invoice.clone()]);
    assert_eq!(found(&anna, "000123", 1).await?, vec![invoice.clone()]);
    found(&anna, "INV-2026/15", 1).await?;
    // A document number is found by its leading and trailing parts with their separator.
    let (number, _) = post(&anna, &g, "m5", "Реализация РН-4567/2024 отгружена").await?;
    assert_eq!(found(&anna, "РН-4567", 1).await?, vec![number.clone()]);
    assert_eq!(found(&anna, "4567/2024", 1).await?, vec![number.clone()]);
    assert_eq!(found(&anna, "РН-4567/2024", 1).await?, vec![number]);
    found(&anna, "2026", 1).await?;
    found(&anna, "invoice shipping", 1).await?;
    // Emoji are not words.
    found(&anna, "👍", 0).await?;

    // Typed on the Latin layout: retried as Russian, and the answer says so.
    let (hits, corrected) = search(&anna, query("ghbdtn")).await?;
    assert_eq!(hits.len(), 1);
    assert_eq!(corrected.as_deref(), Some("привет"));
    // Snippets come with the matches marked.
    let (hits, _) = search(&anna, query("оплачены")).await?;
    assert!(hits[0].snippet.contains("<b>"), "{}", hits[0].snippet);

    // Filters that keep, and filters that drop.
    let mut mine = query("счета");
    mine.author = Some("anna@test.local".into());
    mine.discussion = Some(g.clone());
    mine.to = Some(veche_client::protocol::Timestamp(i64::MAX / 2));
    assert_eq!(search(&anna, mine).await?.0.len(), 2);
    // Paging.
    let mut first = query("счета");
    first.limit = 1;
    let (page1, _) = search(&anna, first.clone()).await?;
    first.offset = 1;
    let (page2, _) = search(&anna, first.clone()).await?;
    assert_eq!(page1.len() + page2.len(), 2);
    assert_ne!(page1[0].message_id, page2[0].message_id);
    match ask(&anna, Request::Search(query("счета"))).await? {
        Reply::SearchResults { more, .. } => assert!(!more),
        other => bail!("{other:?}"),
    }
    let mut by_author = query("счета");
    by_author.author = Some("boris@test.local".into());
    assert!(search(&anna, by_author).await?.0.is_empty());
    let mut in_other = query("счета");
    in_other.discussion = Some("nope@test.local".into());
    assert!(search(&anna, in_other).await?.0.is_empty());
    let mut later = query("счета");
    later.from = Some(veche_client::protocol::Timestamp(i64::MAX / 2));
    assert!(search(&anna, later).await?.0.is_empty());
    Ok(())
}

#[tokio::test]
async fn search_shows_only_what_the_caller_may_read_now() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let anna = user(&node, "anna").await?;
    let boris = user(&node, "boris").await?;
    let carol = user(&node, "carol").await?;
    let g = group(&anna, "Закупки", &["boris"]).await?;
    let (m, _) = post(&anna, &g, "m1", "Договор поставки подписан").await?;
    found(&boris, "договор", 1).await?;
    // Not a member: nothing.
    assert!(search(&carol, query("договор")).await?.0.is_empty());
    // Boris leaves: nothing, at once.
    ask(
        &anna,
        Request::RemoveMember {
            discussion: g.clone(),
            user: "boris".into(),
        },
    )
    .await?;
    assert!(search(&boris, query("договор")).await?.0.is_empty());
    // A deleted message is gone at once, before the index hears of it.
    ask(
        &anna,
        Request::Delete {
            discussion: g.clone(),
            message_id: m,
        },
    )
    .await?;
    assert!(search(&anna, query("договор")).await?.0.is_empty());
    // An edit is found by its new words.
    let (m2, _) = post(&anna, &g, "m2", "Черновик").await?;
    found(&anna, "черновик", 1).await?;
    ask(
        &anna,
        Request::Edit {
            discussion: g.clone(),
            message_id: m2.clone(),
            text: "Окончательная версия".into(),
        },
    )
    .await?;
    assert_eq!(found(&anna, "окончательная", 1).await?, vec![m2]);
    found(&anna, "черновик", 0).await?;
    Ok(())
}

/// Random memberships and object access lists, changed step by step: whatever the index
/// holds, search never returns a message from a discussion the user cannot read now (asked
/// through `get_discussion`, the read path's own authorization).
#[tokio::test]
async fn search_never_returns_an_unreadable_message() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let admin_login = "root";
    node.add_user(admin_login, PASSWORD, true).await?;
    let (root, _) = login(&node, admin_login, PASSWORD, "root-dev").await?;
    let names = ["u0", "u1", "u2", "u3"];
    let mut conns = Vec::new();
    for n in names {
        conns.push(user(&node, n).await?);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eec);
    // Two groups owned by root and two object discussions, each with a message "маркер".
    let mut groups = Vec::new();
    for i in 0..2 {
        let g = group(&root, &format!("g{i}"), &names).await?;
        post(&root, &g, &format!("g{i}"), &format!("маркер группы {i}")).await?;
        groups.push(g);
    }
    let objects: Vec<ObjectRef> = (0..2)
        .map(|i| ObjectRef {
            application: "erp".into(),
            object_type: "invoice".into(),
            object_id: format!("INV-{i}"),
        })
        .collect();
    for (i, o) in objects.iter().enumerate() {
        ask(
            &root,
            Request::SetObjectAccess {
                object: o.clone(),
                users: vec![admin_login.into()],
                groups: vec![],
            },
        )
        .await?;
        let d = discussion(
            &root,
            Request::OpenObject {
                object: o.clone(),
                title: String::new(),
            },
        )
        .await?;
        post(&root, &d.id, &format!("o{i}"), &format!("маркер счёта {i}")).await?;
    }
    found(&root, "маркер", 4).await?;
    let all: Vec<String> = search(&root, query("маркер"))
        .await?
        .0
        .into_iter()
        .map(|h| h.discussion)
        .collect();
    for step in 0..40 {
        // Change something at random.
        match rng.random_range(0..3) {
            0 => {
                let g = &groups[rng.random_range(0..groups.len())];
                let who = names[rng.random_range(0..names.len())];
                let _ = ask(
                    &root,
                    Request::RemoveMember {
                        discussion: g.clone(),
                        user: who.into(),
                    },
                )
                .await;
            }
            1 => {
                let g = &groups[rng.random_range(0..groups.len())];
                let who = names[rng.random_range(0..names.len())];
                let _ = ask(
                    &root,
                    Request::AddMembers {
                        discussion: g.clone(),
                        users: vec![who.into()],
                    },
                )
                .await;
            }
            _ => {
                let o = &objects[rng.random_range(0..objects.len())];
                let mut users: Vec<String> = vec![admin_login.into()];
                users.extend(
                    names
                        .iter()
                        .filter(|_| rng.random_bool(0.5))
                        .map(|n| (*n).to_owned()),
                );
                let groups_granted: Vec<String> = groups
                    .iter()
                    .filter(|_| rng.random_bool(0.3))
                    .cloned()
                    .collect();
                ask(
                    &root,
                    Request::SetObjectAccess {
                        object: o.clone(),
                        users,
                        groups: groups_granted,
                    },
                )
                .await?;
            }
        }
        // Every user finds exactly the markers of the discussions they may read now.
        for (n, conn) in names.iter().zip(&conns) {
            let (hits, _) = search(conn, query("маркер")).await?;
            let found: std::collections::BTreeSet<String> =
                hits.into_iter().map(|h| h.discussion).collect();
            let mut readable = std::collections::BTreeSet::new();
            for d in &all {
                if conn
                    .request(Request::GetDiscussion {
                        discussion: d.clone(),
                    })
                    .await
                    .is_ok()
                {
                    readable.insert(d.clone());
                }
            }
            assert_eq!(found, readable, "step {step}: {n}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_index_catches_up_after_a_stop_and_is_rebuilt_when_lost() -> anyhow::Result<()> {
    let _log = subscribe();
    let mut node = TestNode::spawn().await?;
    let anna = user(&node, "anna").await?;
    let g = group(&anna, "Склад", &[]).await?;
    post(&anna, &g, "m1", "Отгрузка паллет").await?;
    found(&anna, "паллета", 1).await?;
    // Written, then the node stops before the indexer can take it in.
    post(&anna, &g, "m2", "Вторая отгрузка паллет").await?;
    drop(anna);
    node.stop().await;
    node.restart().await?;
    let anna = login(&node, "anna", PASSWORD, "anna-device").await?.0;
    found(&anna, "паллет", 2).await?;

    // The index is lost while the node is stopped: it is built again from the messages.
    drop(anna);
    node.stop().await;
    std::fs::remove_dir_all(node.data_dir().join("search")).context("remove the index")?;
    node.restart().await?;
    let anna = login(&node, "anna", PASSWORD, "anna-device").await?.0;
    found(&anna, "отгрузка", 2).await?;

    // A rebuild on a running node: search keeps answering, and finds the same.
    node.admin(AdminRequest::Reindex).await?;
    for _ in 0..5 {
        let (hits, _) = search(&anna, query("отгрузка")).await?;
        assert_eq!(hits.len(), 2);
    }
    // And once the new index is in place, it answers the same, and takes in what follows.
    node.reindex_and_wait().await?;
    assert_eq!(search(&anna, query("отгрузка")).await?.0.len(), 2);
    post(&anna, &g, "m3", "Третья отгрузка").await?;
    found(&anna, "отгрузка", 3).await?;
    Ok(())
}

#[tokio::test]
async fn the_directory_finds_people_across_alphabets() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    node.admin(AdminRequest::UserAdd {
        login: "ivanov".into(),
        display_name: "Иванов Пётр".into(),
        email: "p.ivanov@corp.test".into(),
        password: PASSWORD.into(),
        admin: false,
        department: "Бухгалтерия".into(),
    })
    .await?;
    node.admin(AdminRequest::UserAdd {
        login: "sidorova".into(),
        display_name: "Сидорова Анна".into(),
        email: "anna@corp.test".into(),
        password: PASSWORD.into(),
        admin: false,
        department: "Склад".into(),
    })
    .await?;
    let me = user(&node, "me").await?;
    let directory = |q: &str| {
        let q = q.to_owned();
        let me = &me;
        async move {
            match ask(
                me,
                Request::Directory {
                    query: q,
                    limit: 10,
                    node: None,
                },
            )
            .await?
            {
                Reply::Directory { users } => {
                    anyhow::Ok(users.into_iter().map(|u| u.login).collect::<Vec<_>>())
                }
                other => bail!("expected a directory, got {other:?}"),
            }
        }
    };
    assert_eq!(
        directory("ivanov").await?.first().map(String::as_str),
        Some("ivanov")
    );
    assert_eq!(
        directory("Иван").await?.first().map(String::as_str),
        Some("ivanov")
    );
    assert_eq!(
        directory("sidorva").await?.first().map(String::as_str),
        Some("sidorova")
    );
    assert_eq!(
        directory("anna@corp").await?.first().map(String::as_str),
        Some("sidorova")
    );
    assert_eq!(
        directory("buhgalter").await?.first().map(String::as_str),
        Some("ivanov"),
        "by department, typed in Latin"
    );
    // Locked people are not listed.
    node.admin(AdminRequest::UserLock {
        login: "sidorova".into(),
    })
    .await?;
    assert!(
        !directory("сидорова")
            .await?
            .contains(&"sidorova".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn search_and_the_directory_over_http() -> anyhow::Result<()> {
    let _log = subscribe();
    let node = TestNode::spawn().await?;
    let anna = user(&node, "anna").await?;
    let g = group(&anna, "Офис", &[]).await?;
    post(&anna, &g, "m1", "Накладная ПТУ-000777 подписана").await?;
    found(&anna, "накладные", 1).await?;
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{}/api/v1/login", node.http_url()))
        .json(&serde_json::json!({"login": "anna", "password": PASSWORD, "device_id": "web"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["session_token"].as_str().context("token")?.to_owned();
    let get = |path: String| {
        http.get(format!("{}{path}", node.http_url()))
            .bearer_auth(&token)
            .header("Veche-Device", "web")
            .send()
    };
    let found: serde_json::Value = get("/api/v1/search?q=000777".into()).await?.json().await?;
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
    let people: serde_json::Value = get("/api/v1/directory?q=анна".into()).await?.json().await?;
    assert_eq!(people["users"][0]["login"], "anna", "{people}");
    Ok(())
}
