//! The link's machine driven step by step: no sockets, no sleeps, a made-up clock.

use super::*;
use crate::keys::NodeKey;

#[test]
fn frames_for_another_link_sender_or_receiver_are_refused() {
    let (me, peer, other) = (
        NodeKey::from_secret([1; 32]).public().node_id(),
        NodeKey::from_secret([2; 32]).public().node_id(),
        NodeKey::from_secret([3; 32]).public().node_id(),
    );
    let ok = Address {
        link: "l".into(),
        from: peer.clone(),
        to: me.clone(),
    };
    assert_eq!(check_address(&ok, "l", &peer, &me), Ok(()));
    let wrong_link = Address {
        link: "m".into(),
        ..ok.clone()
    };
    assert!(check_address(&wrong_link, "l", &peer, &me).is_err());
    let forged_sender = Address {
        from: other.clone(),
        ..ok.clone()
    };
    assert!(
        check_address(&forged_sender, "l", &peer, &me)
            .unwrap_err()
            .to_string()
            .contains("another sender")
    );
    let elsewhere = Address { to: other, ..ok };
    assert!(
        check_address(&elsewhere, "l", &peer, &me)
            .unwrap_err()
            .to_string()
            .contains("addressed to another node")
    );
}

use crate::grant::{GRANT_FORMAT, Notice, Offer, Relationship, Terms};
use crate::wire::Reader;

const SECOND: Duration = Duration::from_secs(1);

fn party(key: &NodeKey, name: &str) -> Party {
    Party {
        node: name.into(),
        key: key.public(),
        addresses: vec!["/ip4/127.0.0.1/tcp/7701".into()],
        organisation: name.into(),
        contact: format!("admin@{name}"),
    }
}

fn hq() -> NodeKey {
    NodeKey::from_secret([1; 32])
}

fn branch() -> NodeKey {
    NodeKey::from_secret([2; 32])
}

/// hq offered, branch accepted; valid until `not_after` (wall clock, ms).
fn grant(version: u32, not_after: i64) -> Grant {
    let terms = Terms {
        format: GRANT_FORMAT,
        link: "l".into(),
        version,
        relationship: Relationship::Branch,
        scope: Scope {
            object_discussions: true,
            directory: DirectoryScope::Members,
            presence: true,
            max_file_mb: 10,
        },
        not_before: 0,
        not_after,
        nonce: format!("n{version}"),
        offerer: party(&hq(), "hq"),
    };
    Offer::create(&hq(), terms)
        .unwrap()
        .accept(&branch(), party(&branch(), "branch"), 1)
        .unwrap()
}

fn notice(by: &NodeKey, grant: &Grant, change: Change) -> SignedNotice {
    SignedNotice::create(
        by,
        grant,
        &grant.terms().scope,
        Notice {
            link: grant.link().to_owned(),
            grant: grant.hash(),
            at: 1,
            change,
        },
    )
    .unwrap()
}

/// An item for the peer (its content does not matter to the machine).
fn item(n: u64) -> Outgoing {
    Outgoing {
        link_seq: n,
        item: Item::Readers {
            discussion: "d@hq".into(),
            users: vec![Reader {
                user: format!("u{n}@branch"),
                access: crate::wire::Access::Read,
            }],
        },
    }
}

/// hq's side of the link, driven by hand: `t` is the time since it started.
struct Harness {
    link: Link,
    start: Instant,
    t: Duration,
    wall_ms: i64,
}

impl Harness {
    fn new(backoff: Backoff) -> Self {
        let start = Instant::now();
        let now = Now {
            instant: start,
            wall_ms: 1_000,
        };
        let link = Link::new(
            hq().public(),
            grant(1, i64::MAX),
            grant(1, i64::MAX).terms().scope.clone(),
            backoff,
            false,
            now,
        )
        .unwrap();
        Self {
            link,
            start,
            t: Duration::ZERO,
            wall_ms: 1_000,
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: self.start + self.t,
            wall_ms: self.wall_ms,
        }
    }

    fn advance(&mut self, by: Duration) {
        self.t += by;
    }

    /// Moves the clock to when the machine wants its timer, at least by a millisecond.
    fn sleep(&mut self) {
        let at = self.link.poll_timeout().expect("a timer is armed");
        self.t = (at - self.start).max(self.t + Duration::from_millis(1));
    }

    fn feed(&mut self, input: Input) -> Vec<Output> {
        let now = self.now();
        self.link.handle(input, now);
        std::iter::from_fn(|| self.link.poll_output()).collect()
    }

    fn inbound(&mut self, request: Request) -> (Inbound, Vec<Output>) {
        let now = self.now();
        let verdict = self.link.inbound(request, now);
        (
            verdict,
            std::iter::from_fn(|| self.link.poll_output()).collect(),
        )
    }

    /// Dials, connects and greets; the peer holds our items up to `received`. Returns what
    /// the machine does once the greeting is recorded.
    fn greet(&mut self, received: u64) -> Vec<Output> {
        let out = self.feed(Input::Tick);
        assert!(matches!(out[..], [Output::Dial]), "{out:?}");
        self.connect_and_greet(received)
    }

    fn connect_and_greet(&mut self, received: u64) -> Vec<Output> {
        let out = self.feed(Input::Connected);
        assert!(matches!(out[..], [Output::Watermark]), "{out:?}");
        let out = self.feed(Input::Watermark(Ok(0)));
        let token = hello(&out);
        let out = self.feed(Input::Answered {
            token,
            response: Response::Hello {
                received,
                last: None,
            },
        });
        assert!(
            matches!(
                out[..],
                [
                    Output::Tell(Tell::Connected),
                    Output::Acked {
                        greeting: Some(_),
                        ..
                    }
                ]
            ),
            "{out:?}"
        );
        let Output::Acked { greeting, .. } = out[1] else {
            unreachable!()
        };
        self.feed(Input::AckRecorded {
            greeting,
            result: Ok(false),
        })
    }

    /// A push of `items` goes; the peer stores all of it.
    fn push(&mut self, items: Vec<Outgoing>) -> Vec<Output> {
        let last = items.last().map_or(0, |i| i.link_seq);
        let out = self.feed(Input::Batch(Ok(items)));
        let (token, _, _) = pushed(&out);
        self.feed(Input::Answered {
            token,
            response: Response::Ack {
                upto: last,
                rejected: Vec::new(),
            },
        })
    }

    /// The peer's greeting, with the grant `with`.
    fn hello_from_peer(&self, with: &Grant) -> Request {
        Request::Hello {
            address: from_peer(),
            grant: with.hash(),
            received: 0,
        }
    }
}

fn from_peer() -> Address {
    Address {
        link: "l".into(),
        from: branch().public().node_id(),
        to: hq().public().node_id(),
    }
}

fn backoff() -> Backoff {
    Backoff {
        retry_min: Duration::from_millis(250),
        retry_max: Duration::from_secs(300),
    }
}

/// The token of the one greeting among `out`.
fn hello(out: &[Output]) -> Token {
    match out {
        [
            Output::Send {
                token,
                request: Request::Hello { .. },
            },
        ] => *token,
        other => panic!("no greeting: {other:?}"),
    }
}

/// The token, first number and length of the one push among `out`.
fn pushed(out: &[Output]) -> (Token, u64, usize) {
    match out {
        [
            Output::Send {
                token,
                request: Request::Push { first, items, .. },
            },
        ] => (*token, *first, items.len()),
        other => panic!("no push: {other:?}"),
    }
}

#[test]
fn a_greeting_resumes_the_outbox_after_what_the_peer_holds() {
    let mut h = Harness::new(backoff());
    assert_eq!(h.link.phase(), &Phase::Disconnected);
    // The peer holds our items up to 2: the outbox is read after it, once that is recorded.
    let out = h.greet(2);
    assert!(matches!(out[..], [Output::Outbox { after: 2 }]), "{out:?}");
    assert_eq!(h.link.phase(), &Phase::Active);
    assert!(h.link.status().connected);
    // Items 3 to 5 wait (and 7, after a hole: not sent).
    let out = h.feed(Input::Batch(Ok(vec![item(3), item(4), item(5), item(7)])));
    let (token, first, len) = pushed(&out);
    assert_eq!((first, len), (3, 3));
    // Stop-and-wait: a wake meanwhile sends nothing more.
    assert!(h.feed(Input::Wake).is_empty());
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 5,
            rejected: vec![Rejected {
                link_seq: 4,
                reason: "no".into(),
            }],
        },
    });
    assert!(
        matches!(
            &out[..],
            [
                Output::Tell(Tell::Rejected(r)),
                Output::Acked {
                    upto: 5,
                    greeting: None,
                    ..
                },
                Output::Outbox { after: 5 },
            ] if r.len() == 1
        ),
        "{out:?}"
    );
    assert_eq!(h.link.status().acked, 5);
    // Drained: nothing more is read until the next wake.
    assert!(h.feed(Input::Batch(Ok(Vec::new()))).is_empty());
    assert!(h.feed(Input::Tick).is_empty());
    let out = h.feed(Input::Wake);
    assert!(matches!(out[..], [Output::Outbox { after: 5 }]), "{out:?}");
}

#[test]
fn a_wake_while_the_outbox_is_read_is_not_lost() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    // The read that started before the wake comes back empty: it is read again.
    assert!(h.feed(Input::Wake).is_empty());
    let out = h.feed(Input::Batch(Ok(Vec::new())));
    assert!(matches!(out[..], [Output::Outbox { after: 0 }]), "{out:?}");
    assert!(h.feed(Input::Batch(Ok(Vec::new()))).is_empty());
}

#[test]
fn an_acknowledgement_beyond_the_push_makes_the_link_greet_again() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    let out = h.feed(Input::Batch(Ok(vec![item(1), item(2)])));
    let (token, ..) = pushed(&out);
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 9,
            rejected: Vec::new(),
        },
    });
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(h.link.phase(), &Phase::Greeting);
    assert_eq!(h.link.status().acked, 0);
    h.sleep();
    let out = h.feed(Input::Tick);
    assert!(matches!(out[..], [Output::Watermark]), "{out:?}");
}

#[test]
fn nothing_is_pushed_until_the_greeting_is_recorded_and_a_renumbering_is_told() {
    let mut h = Harness::new(backoff());
    h.feed(Input::Tick);
    h.feed(Input::Connected);
    let token = hello(&h.feed(Input::Watermark(Ok(0))));
    // The peer holds more of ours than this node remembers: it was restored from a backup.
    let out = h.feed(Input::Answered {
        token,
        response: Response::Hello {
            received: 40,
            last: None,
        },
    });
    assert!(matches!(h.link.phase(), Phase::Settling { greeting: 1 }));
    assert_eq!(out.len(), 2, "{out:?}");
    // Settling: a wake reads nothing yet.
    assert!(h.feed(Input::Wake).is_empty());
    assert!(h.feed(Input::Tick).is_empty());
    // The store numbered what waits after 40: it is read and the node told.
    let out = h.feed(Input::AckRecorded {
        greeting: Some(1),
        result: Ok(true),
    });
    assert!(
        matches!(
            out[..],
            [Output::Outbox { after: 40 }, Output::Tell(Tell::Restored)]
        ),
        "{out:?}"
    );
    assert_eq!(h.link.phase(), &Phase::Active);
    h.push(vec![item(41)]);
    h.feed(Input::Batch(Ok(Vec::new())));
    // Told again only ten minutes later, however often it happens.
    h.feed(Input::Disconnected);
    h.advance(SECOND);
    h.feed(Input::Tick);
    h.feed(Input::Connected);
    let token = hello(&h.feed(Input::Watermark(Ok(0))));
    h.feed(Input::Answered {
        token,
        response: Response::Hello {
            received: 41,
            last: None,
        },
    });
    let out = h.feed(Input::AckRecorded {
        greeting: Some(2),
        result: Ok(true),
    });
    assert!(matches!(out[..], [Output::Outbox { after: 41 }]), "{out:?}");
    h.feed(Input::Batch(Ok(Vec::new())));
    // A recorded greeting that is not the current one settles nothing.
    h.feed(Input::Disconnected);
    h.feed(Input::Tick);
    h.feed(Input::Connected);
    let token = hello(&h.feed(Input::Watermark(Ok(0))));
    h.feed(Input::Answered {
        token,
        response: Response::Hello {
            received: 41,
            last: None,
        },
    });
    let out = h.feed(Input::AckRecorded {
        greeting: Some(2),
        result: Ok(false),
    });
    assert!(out.is_empty(), "{out:?}");
    assert!(matches!(h.link.phase(), Phase::Settling { greeting: 3 }));
}

#[test]
fn a_peer_that_lost_acknowledged_items_stalls_the_link_and_the_node_is_told_once() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    // The outbox starts at 4: the peer lost 1 to 3.
    let out = h.feed(Input::Batch(Ok(vec![item(4), item(5)])));
    assert!(
        matches!(out[..], [Output::Tell(Tell::Behind { received: 0 })]),
        "{out:?}"
    );
    let stalled = h.link.status().stalled.unwrap();
    assert!(
        stalled.contains("up to 0") && stalled.contains("holds 4"),
        "{stalled}"
    );
    let out = h.feed(Input::Wake);
    assert!(matches!(out[..], [Output::Outbox { after: 0 }]), "{out:?}");
    assert!(h.feed(Input::Batch(Ok(vec![item(4)]))).is_empty());
}

#[test]
fn refusals_back_off_up_to_retry_max() {
    let mut h = Harness::new(backoff());
    h.feed(Input::Tick);
    h.feed(Input::Connected);
    let mut pauses = Vec::new();
    for _ in 0..14 {
        let out = h.feed(Input::Watermark(Ok(0)));
        let token = hello(&out);
        let refused = Response::Refused {
            reason: "the grants differ".into(),
            link_ended: false,
        };
        let before = h.t;
        assert!(
            h.feed(Input::Answered {
                token,
                response: refused
            })
            .is_empty()
        );
        h.sleep();
        pauses.push(h.t - before);
        let out = h.feed(Input::Tick);
        assert!(matches!(out[..], [Output::Watermark]), "{out:?}");
    }
    let expected: Vec<Duration> = (0..14)
        .map(|n| (Duration::from_millis(250) * 2u32.pow(n)).min(Duration::from_secs(300)))
        .collect();
    assert_eq!(pauses, expected);
    // A peer that says the link is over ends it.
    let token = hello(&h.feed(Input::Watermark(Ok(0))));
    let out = h.feed(Input::Answered {
        token,
        response: Response::Refused {
            reason: "revoked".into(),
            link_ended: true,
        },
    });
    assert!(
        matches!(&out[..], [Output::Disallow, Output::Tell(Tell::Ended { reason, .. })] if reason.contains("revoked")),
        "{out:?}"
    );
    assert!(h.link.is_ended());
    h.advance(Duration::from_secs(3600));
    assert!(h.feed(Input::Tick).is_empty());
    assert!(h.feed(Input::Wake).is_empty());
}

#[test]
fn a_peer_that_does_not_let_us_in_is_not_pressed() {
    // Connections that close before any greeting: the peer does not allow this node.
    let mut h = Harness::new(backoff());
    let mut pauses = Vec::new();
    for _ in 0..12 {
        let before = h.t;
        refused_connection(&mut h);
        h.sleep();
        pauses.push(h.t - before);
    }
    assert_eq!(pauses.last(), Some(&Duration::from_secs(300)));
}

/// A dial, a connection, and the peer closes it before our greeting is answered.
fn refused_connection(h: &mut Harness) {
    let out = h.feed(Input::Tick);
    assert!(matches!(out[..], [Output::Dial]), "{out:?}");
    h.feed(Input::Connected);
    hello(&h.feed(Input::Watermark(Ok(0))));
    assert!(h.feed(Input::Disconnected).is_empty());
}

/// Dials that fail for `secs` seconds of the machine's clock, a probe each time it asks.
/// Returns the longest pause between two probes; the last one has just failed.
fn unreachable_for(h: &mut Harness, secs: u64) -> Duration {
    let mut longest = Duration::ZERO;
    let mut last = h.t;
    loop {
        let out = h.feed(Input::Tick);
        assert!(matches!(out[..], [Output::Dial]), "{out:?}");
        longest = longest.max(h.t - last);
        last = h.t;
        // Nothing before the pause is over.
        assert!(h.feed(Input::DialFailed).is_empty());
        assert!(h.feed(Input::Tick).is_empty());
        if h.t >= Duration::from_secs(secs) {
            return longest;
        }
        h.sleep();
    }
}

#[test]
fn after_a_long_partition_the_link_carries_traffic_within_seconds_of_the_heal() {
    let mut h = Harness::new(backoff());
    // Connected and delivering, then the network goes.
    h.greet(0);
    h.push(vec![item(1)]);
    h.feed(Input::Batch(Ok(Vec::new())));
    assert!(
        h.feed(Input::Disconnected)
            .iter()
            .any(|o| matches!(o, Output::Tell(Tell::Disconnected)))
    );
    // Something waits meanwhile.
    let out = h.feed(Input::Wake);
    assert!(matches!(out[..], [Output::Dial]), "{out:?}");
    h.feed(Input::DialFailed);
    h.sleep();
    // 400 s of failed dials: probed every few seconds, never less often than every 5 s.
    let longest = unreachable_for(&mut h, 400);
    assert!(longest <= PROBE_MAX, "{longest:?}");
    // The network heals now, right after a failed probe: the next one is due within 5 s.
    let heal = h.t;
    let due = h.link.poll_timeout().unwrap() - h.start;
    assert!(due <= heal + PROBE_MAX, "due {due:?}, healed at {heal:?}");
    h.t = due.max(h.t);
    let out = h.feed(Input::Tick);
    assert!(matches!(out[..], [Output::Dial]), "{out:?}");
    // The dial succeeds: greeted, the node is told, and what waited goes.
    let out = h.connect_and_greet(1);
    assert!(matches!(out[..], [Output::Outbox { after: 1 }]), "{out:?}");
    let (_, first, len) = pushed(&h.feed(Input::Batch(Ok(vec![item(2), item(3)]))));
    assert_eq!((first, len), (2, 2));
    assert!(h.t - heal <= PROBE_MAX);
}

#[test]
fn requests_that_time_out_are_retried_on_the_probe_schedule() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    let out = h.feed(Input::Batch(Ok(vec![item(1)])));
    let (mut token, ..) = pushed(&out);
    let mut pauses = Vec::new();
    for _ in 0..8 {
        let before = h.t;
        assert!(h.feed(Input::RequestFailed { token }).is_empty());
        h.sleep();
        pauses.push(h.t - before);
        let out = h.feed(Input::Tick);
        assert!(matches!(out[..], [Output::Outbox { after: 0 }]), "{out:?}");
        token = pushed(&h.feed(Input::Batch(Ok(vec![item(1)])))).0;
    }
    assert_eq!(pauses.iter().max(), Some(&PROBE_MAX));
    // The same range goes again; an answer ends the probing.
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 1,
            rejected: Vec::new(),
        },
    });
    assert!(
        matches!(
            out[..],
            [Output::Acked { upto: 1, .. }, Output::Outbox { after: 1 }]
        ),
        "{out:?}"
    );
}

#[test]
fn a_connection_from_the_peer_ends_any_pause() {
    let mut h = Harness::new(backoff());
    // Refused many times: the next attempt is minutes away.
    for _ in 0..12 {
        refused_connection(&mut h);
        h.sleep();
    }
    refused_connection(&mut h);
    assert!(h.link.poll_timeout().unwrap() - (h.start + h.t) >= Duration::from_secs(60));
    // The peer dials us: the greeting goes at once.
    let out = h.feed(Input::Connected);
    assert!(matches!(out[..], [Output::Watermark]), "{out:?}");
}

#[test]
fn the_peer_must_greet_with_the_grant_before_anything_else() {
    let mut h = Harness::new(backoff());
    let push = Request::Push {
        address: from_peer(),
        first: 1,
        items: vec![item(1).item],
    };
    let (verdict, _) = h.inbound(push.clone());
    assert!(
        matches!(verdict, Inbound::Refuse { ref reason, link_ended: false } if reason.contains("greet first")),
        "{verdict:?}"
    );
    let (verdict, _) = h.inbound(h.hello_from_peer(&grant(7, i64::MAX)));
    assert!(
        matches!(verdict, Inbound::Refuse { ref reason, .. } if reason.contains("grants differ")),
        "{verdict:?}"
    );
    let mut elsewhere = h.hello_from_peer(&grant(1, i64::MAX));
    if let Request::Hello { address, .. } = &mut elsewhere {
        address.from = hq().public().node_id();
    }
    let (verdict, _) = h.inbound(elsewhere);
    assert!(
        matches!(verdict, Inbound::Refuse { ref reason, .. } if reason.contains("another sender")),
        "{verdict:?}"
    );
    let (verdict, _) = h.inbound(h.hello_from_peer(&grant(1, i64::MAX)));
    assert!(matches!(verdict, Inbound::Greet), "{verdict:?}");
    let (verdict, _) = h.inbound(push);
    assert!(
        matches!(verdict, Inbound::Push { first: 1, ref items } if items.len() == 1),
        "{verdict:?}"
    );
    // A new connection: greet again first.
    h.feed(Input::Tick);
    h.feed(Input::Connected);
    h.feed(Input::Disconnected);
    let (verdict, _) = h.inbound(Request::Push {
        address: from_peer(),
        first: 2,
        items: Vec::new(),
    });
    assert!(matches!(verdict, Inbound::Refuse { .. }), "{verdict:?}");
}

#[test]
fn a_peer_greeting_with_the_renewal_held_here_puts_it_in_force() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    h.feed(Input::Batch(Ok(Vec::new())));
    let renewal = grant(2, i64::MAX);
    assert_eq!(
        h.link.expect_renewal(grant(3, i64::MAX)),
        Err(LinkError::NotNext)
    );
    h.link.expect_renewal(renewal.clone()).unwrap();
    let (verdict, out) = h.inbound(h.hello_from_peer(&renewal));
    assert!(matches!(verdict, Inbound::Greet), "{verdict:?}");
    // Renewed, and this node greets again under it.
    assert!(
        matches!(&out[..], [Output::Tell(Tell::Renewed { grant }), Output::Watermark] if *grant == renewal.hash()),
        "{out:?}"
    );
    let out = h.feed(Input::Watermark(Ok(0)));
    assert!(
        matches!(&out[..], [Output::Send { request: Request::Hello { grant, .. }, .. }] if *grant == renewal.hash()),
        "{out:?}"
    );
    // The old grant still greets, until the peer has taken the renewal too.
    let (verdict, _) = h.inbound(h.hello_from_peer(&grant(1, i64::MAX)));
    assert!(matches!(verdict, Inbound::Greet), "{verdict:?}");
}

#[test]
fn a_renewal_this_node_confirms_closes_the_connection_so_both_greet_again() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    let renewal = grant(2, i64::MAX);
    let scope = renewal.terms().scope.clone();
    let now = h.now();
    h.link.renew(renewal, scope, now).unwrap();
    let out: Vec<Output> = std::iter::from_fn(|| h.link.poll_output()).collect();
    assert!(matches!(out[..], [Output::Disconnect]), "{out:?}");
    assert!(!h.link.status().connected);
    let other = Offer::create(
        &NodeKey::from_secret([9; 32]),
        Terms {
            offerer: party(&NodeKey::from_secret([9; 32]), "stranger"),
            ..grant(3, i64::MAX).terms().clone()
        },
    )
    .unwrap()
    .accept(&hq(), party(&hq(), "hq"), 1)
    .unwrap();
    let scope = other.terms().scope.clone();
    assert_eq!(h.link.renew(other, scope, now), Err(LinkError::OtherPeer));
}

#[test]
fn notices_go_before_the_outbox_and_the_peers_are_verified() {
    let mut h = Harness::new(backoff());
    h.greet(0);
    h.feed(Input::Batch(Ok(Vec::new())));
    let g = grant(1, i64::MAX);
    let mut narrower = g.terms().scope.clone();
    narrower.presence = false;
    // Ours: in force here at once, told to the peer before anything else goes.
    let out = h.feed(Input::Notify(notice(
        &hq(),
        &g,
        Change::Narrow {
            scope: narrower.clone(),
        },
    )));
    let token = match &out[..] {
        [
            Output::Send {
                token,
                request: Request::Notice { .. },
            },
        ] => *token,
        other => panic!("{other:?}"),
    };
    assert!(!h.link.scope().presence);
    assert!(h.feed(Input::Wake).is_empty());
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 0,
            rejected: Vec::new(),
        },
    });
    assert!(matches!(out[..], [Output::Outbox { after: 0 }]), "{out:?}");
    // The peer's: verified against the grant.
    h.inbound(h.hello_from_peer(&g));
    let mut narrowest = narrower.clone();
    narrowest.max_file_mb = 0;
    let theirs = notice(
        &branch(),
        &g,
        Change::Narrow {
            scope: narrowest.clone(),
        },
    );
    let (verdict, out) = h.inbound(Request::Notice {
        address: from_peer(),
        notice: theirs.signed().clone(),
    });
    assert!(matches!(verdict, Inbound::Noted), "{verdict:?}");
    assert!(
        matches!(&out[..], [Output::Tell(Tell::Narrowed { scope, .. })] if *scope == narrowest),
        "{out:?}"
    );
    let mut forged = theirs.signed().clone();
    forged.signature.0[5] ^= 1;
    let (verdict, _) = h.inbound(Request::Notice {
        address: from_peer(),
        notice: forged,
    });
    assert!(
        matches!(verdict, Inbound::Refuse { ref reason, .. } if reason.starts_with("notice refused")),
        "{verdict:?}"
    );
    // A revocation ends the link.
    let revoke = notice(
        &branch(),
        &g,
        Change::Revoke {
            reason: "office closed".into(),
        },
    );
    let (verdict, out) = h.inbound(Request::Notice {
        address: from_peer(),
        notice: revoke.signed().clone(),
    });
    assert!(matches!(verdict, Inbound::Noted), "{verdict:?}");
    assert!(
        matches!(&out[..], [Output::Disallow, Output::Tell(Tell::Ended { reason, notice: Some(_) })] if reason.contains("office closed")),
        "{out:?}"
    );
    let (verdict, _) = h.inbound(h.hello_from_peer(&g));
    assert!(
        matches!(
            verdict,
            Inbound::Refuse {
                link_ended: true,
                ..
            }
        ),
        "{verdict:?}"
    );
}

#[test]
fn a_revocation_is_delivered_once_then_the_link_ends() {
    // Connected: the revocation goes without a greeting.
    let mut h = Harness::new(backoff());
    h.greet(0);
    h.feed(Input::Batch(Ok(Vec::new())));
    let g = grant(1, i64::MAX);
    let out = h.feed(Input::End(Some(notice(
        &hq(),
        &g,
        Change::Revoke {
            reason: "closed".into(),
        },
    ))));
    let token = match &out[..] {
        [
            Output::Send {
                token,
                request: Request::Notice { .. },
            },
        ] => *token,
        other => panic!("{other:?}"),
    };
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 0,
            rejected: Vec::new(),
        },
    });
    assert!(matches!(out[..], [Output::Disallow]), "{out:?}");
    assert!(h.link.is_ended());
    // Not connected, and the peer cannot be reached: it ends anyway, nothing retried.
    let mut h = Harness::new(backoff());
    let out = h.feed(Input::End(Some(notice(
        &hq(),
        &g,
        Change::Revoke {
            reason: "closed".into(),
        },
    ))));
    assert!(matches!(out[..], [Output::Dial]), "{out:?}");
    let out = h.feed(Input::DialFailed);
    assert!(matches!(out[..], [Output::Disallow]), "{out:?}");
    h.advance(Duration::from_secs(60));
    assert!(h.feed(Input::Tick).is_empty());
}

#[test]
fn a_link_ends_when_its_grant_expires() {
    let mut h = Harness::new(backoff());
    let expiring = grant(1, 5_000);
    let scope = expiring.terms().scope.clone();
    h.link = Link::new(hq().public(), expiring, scope, backoff(), false, h.now()).unwrap();
    h.greet(0);
    h.wall_ms = 5_000;
    let out = h.feed(Input::Tick);
    assert!(
        matches!(&out[..], [Output::Disallow, Output::Tell(Tell::Ended { reason, notice: None })] if reason.contains("expired")),
        "{out:?}"
    );
}

fn presence(user: &str) -> Presence {
    Presence {
        user: user.into(),
        state: "away".into(),
        status_text: String::new(),
    }
}

#[test]
fn a_peers_presence_is_taken_at_a_bounded_rate_for_its_own_users_only() {
    let mut h = Harness::new(backoff());
    h.inbound(h.hello_from_peer(&grant(1, i64::MAX)));
    let request = || Request::Presence {
        address: from_peer(),
        users: vec![presence("boris@branch"), presence("anna@hq")],
    };
    // A burst of 50 at once.
    for _ in 0..50 {
        let (verdict, _) = h.inbound(request());
        assert!(
            matches!(&verdict, Inbound::Presence(users) if users[..] == [presence("boris@branch")]),
            "{verdict:?}"
        );
    }
    let (verdict, _) = h.inbound(request());
    assert!(
        matches!(verdict, Inbound::Refuse { ref reason, .. } if reason.contains("too many presence")),
        "{verdict:?}"
    );
    // Then 20 a second.
    h.advance(SECOND);
    let taken = (0..30)
        .filter(|_| matches!(h.inbound(request()).0, Inbound::Presence(_)))
        .count();
    assert_eq!(taken, 20);
}

#[test]
fn our_presence_goes_one_request_at_a_time_merged_and_paced() {
    let mut h = Harness::new(backoff());
    // Not greeted: dropped (the next greeting sends everyone again).
    assert!(
        h.feed(Input::Presence(vec![presence("anna@hq")]))
            .is_empty()
    );
    h.greet(0);
    h.feed(Input::Batch(Ok(Vec::new())));
    let out = h.feed(Input::Presence(vec![presence("anna@hq")]));
    let token = match &out[..] {
        [
            Output::Send {
                token,
                request: Request::Presence { users, .. },
            },
        ] if users.len() == 1 => *token,
        other => panic!("{other:?}"),
    };
    // Changes while one is in flight merge: a user's last state wins.
    assert!(
        h.feed(Input::Presence(vec![presence("vera@hq")]))
            .is_empty()
    );
    let mut dnd = presence("vera@hq");
    dnd.state = "dnd".into();
    assert!(
        h.feed(Input::Presence(vec![dnd.clone(), presence("ivan@hq")]))
            .is_empty()
    );
    let out = h.feed(Input::Answered {
        token,
        response: Response::Ack {
            upto: 0,
            rejected: Vec::new(),
        },
    });
    let mut token = match &out[..] {
        [
            Output::Send {
                token,
                request: Request::Presence { users, .. },
            },
        ] => {
            assert_eq!(users[..], [dnd, presence("ivan@hq")]);
            *token
        }
        other => panic!("{other:?}"),
    };
    // The allowance (40, then 16 a second) holds the rest back until the timer.
    let mut sent = 2;
    loop {
        h.feed(Input::Presence(vec![presence("anna@hq")]));
        let out = h.feed(Input::RequestFailed { token });
        match &out[..] {
            [Output::Send { token: t, .. }] => {
                token = *t;
                sent += 1;
            }
            [] => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, 40);
    h.advance(SECOND);
    let out = h.feed(Input::Tick);
    assert!(
        matches!(
            out[..],
            [Output::Send {
                request: Request::Presence { .. },
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn a_link_its_offerer_never_confirms_ends_at_the_deadline() {
    // The machine does not know who offered: the node says the peer has to confirm.
    let mut h = Harness::new(backoff());
    h.link.expect_confirmation(10_000);
    assert!(h.link.status().unconfirmed);
    // The peer does not let this node in (it never confirmed this grant): pending, refused.
    refused_connection(&mut h);
    h.wall_ms = 9_999;
    h.sleep();
    refused_connection(&mut h);
    assert!(!h.link.is_ended());
    h.wall_ms = 10_000;
    let out = h.feed(Input::Tick);
    assert!(
        matches!(&out[..], [Output::Disallow, Output::Tell(Tell::Ended { reason, notice: None })] if reason == UNCONFIRMED),
        "{out:?}"
    );
    assert!(h.link.is_ended());
    assert!(!h.link.status().unconfirmed);
}

#[test]
fn a_greeting_either_way_confirms_a_pending_link() {
    // Our greeting answered.
    let mut h = Harness::new(backoff());
    h.link.expect_confirmation(10_000);
    assert!(matches!(h.feed(Input::Tick)[..], [Output::Dial]));
    h.feed(Input::Connected);
    let token = hello(&h.feed(Input::Watermark(Ok(0))));
    let out = h.feed(Input::Answered {
        token,
        response: Response::Hello {
            received: 0,
            last: None,
        },
    });
    assert!(
        matches!(
            out[..],
            [
                Output::Tell(Tell::Connected),
                Output::Tell(Tell::Confirmed),
                Output::Acked { .. }
            ]
        ),
        "{out:?}"
    );
    assert!(!h.link.status().unconfirmed);
    h.wall_ms = 20_000;
    h.feed(Input::Tick);
    assert!(!h.link.is_ended());

    // The peer's greeting.
    let mut h = Harness::new(backoff());
    h.link.expect_confirmation(10_000);
    let (verdict, out) = h.inbound(h.hello_from_peer(&grant(1, i64::MAX)));
    assert!(matches!(verdict, Inbound::Greet), "{verdict:?}");
    assert!(
        matches!(out[..], [Output::Tell(Tell::Confirmed)]),
        "{out:?}"
    );

    // A peer that greeted before the node said it must: told at once, no deadline.
    let mut h = Harness::new(backoff());
    h.inbound(h.hello_from_peer(&grant(1, i64::MAX)));
    h.link.expect_confirmation(10_000);
    let out: Vec<Output> = std::iter::from_fn(|| h.link.poll_output()).collect();
    assert!(
        matches!(out[..], [Output::Tell(Tell::Confirmed)]),
        "{out:?}"
    );
    assert!(!h.link.status().unconfirmed);
}
