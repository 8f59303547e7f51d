//! Checks of the leader election, with every strategy, that run unchanged on every
//! backend (see `recipes.rs` for the conventions: fresh names, `crash`, `cut`, no sleeps
//! that let something happen).
#![allow(dead_code)] // each test binary runs the checks its backend supports

use super::recipes::{fresh, keys, keys_stay_while, sessions, until_keys, within, Crash};
use leasehold::{Client, Election, Error, LeaderInfo, Leadership, Session, Strategy};
use std::time::Duration;
use tokio::sync::mpsc;

/// Campaign, leader, proclaim and resign, with etcd's key layout.
pub async fn election_campaign_leader_proclaim_resign(client: &Client) {
    let name = fresh("elect-basic");
    let prefix = client.prefix_of(&name).unwrap();
    let s = client.session().await.unwrap();
    let election = Election::new(&s, &name).unwrap();
    assert_eq!(election.leader().await.unwrap(), None);
    let leadership = election.campaign("node-a").await.unwrap();
    let key = format!("{prefix}{:x}", s.lease_id());
    assert_eq!((leadership.key(), election.key()), (key.as_str(), key.as_str()));
    let fields = |l: &LeaderInfo| (l.value.clone(), l.token, l.key.clone(), l.lease);
    let expected = (b"node-a".to_vec(), leadership.fencing_token(), key, s.lease_id());
    assert_eq!(election.leader().await.unwrap().as_ref().map(fields), Some(expected.clone()));
    leadership.proclaim("node-a:2").await.unwrap();
    let now = election.leader().await.unwrap().unwrap();
    assert_eq!(fields(&now), (b"node-a:2".to_vec(), expected.1, expected.2, expected.3), "same term, same token");
    assert_eq!(client.backend().get(&now.key).await.unwrap().unwrap().lease, s.lease_id(), "proclaim keeps the lease");
    assert!(leadership.is_valid());
    leadership.resign().await.unwrap();
    assert_eq!(election.leader().await.unwrap(), None);
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
    let again = election.campaign("node-a:3").await.unwrap();
    assert!(again.fencing_token() > expected.1);
}

/// The next candidate is elected when the leader resigns, not before.
pub async fn election_failover_after_resign(client: &Client) {
    let name = fresh("elect-resign");
    let prefix = client.prefix_of(&name).unwrap();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let leader = Election::new(&a, &name).unwrap().campaign("a").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let candidate = Election::new(&b, &name).unwrap();
    tokio::spawn(async move { tx.send(candidate.campaign("b").await.unwrap()).unwrap() });
    until_keys(client, &prefix, 2).await;
    assert!(rx.try_recv().is_err(), "one leader at a time");
    let election = Election::new(&a, &name).unwrap();
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"a");
    let a_token = leader.fencing_token();
    leader.resign().await.unwrap();
    let next = within("failover", rx.recv()).await.unwrap();
    assert!(next.fencing_token() > a_token);
    let info = election.leader().await.unwrap().unwrap();
    assert_eq!((info.value.as_slice(), info.token, info.lease), (&b"b"[..], next.fencing_token(), b.lease_id()));
}

/// When the leader's lease vanishes, the next candidate is elected; the old leader learns
/// it lost, and its proclaim fails with `NotHeld` and writes nothing.
pub async fn election_failover_after_lease_expiry(client: &Client, crash: Crash<'_>) {
    let name = fresh("elect-expiry");
    let prefix = client.prefix_of(&name).unwrap();
    let a = client.session_builder().ttl(Duration::from_secs(2)).open().await.unwrap();
    let b = client.session().await.unwrap();
    let old = Election::new(&a, &name).unwrap().campaign("a").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let candidate = Election::new(&b, &name).unwrap();
    tokio::spawn(async move { tx.send(candidate.campaign("b").await.unwrap()).unwrap() });
    until_keys(client, &prefix, 2).await;
    crash(a.lease_id());
    let new = within("failover", rx.recv()).await.unwrap();
    assert!(new.fencing_token() > old.fencing_token());
    match old.proclaim("a is back").await {
        Err(e @ Error::NotHeld { what: "election", .. }) => assert!(e.to_string().starts_with("election: not held")),
        other => panic!("a proclaim by a former leader must fail with NotHeld, got {other:?}"),
    }
    let leader = Election::new(&b, &name).unwrap().leader().await.unwrap().unwrap();
    assert_eq!((leader.value.as_slice(), leader.key.as_str()), (&b"b"[..], new.key()));
    assert_eq!(keys(client, &prefix).await, [new.key().to_owned()], "the failed proclaim wrote nothing");
    within("the old leader learns it", old.lost()).await;
    assert!(!old.is_valid() && new.is_valid());
}

/// An observer reports every state in order, however late it reads: no leader, a leader,
/// its proclaimed value, a failover straight to the next candidate, the gap with no leader,
/// and the next term. A late observer starts from the current state.
pub async fn election_observe_reports_every_change(client: &Client) {
    let name = fresh("elect-observe");
    let prefix = client.prefix_of(&name).unwrap();
    let [a, b, c]: [Session; 3] = sessions(client, 3).await.try_into().unwrap();
    let election = Election::new(&a, &name).unwrap();
    let mut observer = election.observe();
    assert_eq!(within("first report", observer.changed()).await.unwrap(), None);

    let la = election.campaign("a").await.unwrap();
    let ta = la.fencing_token();
    la.proclaim("a2").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let eb = Election::new(&b, &name).unwrap();
    tokio::spawn(async move { tx.send(eb.campaign("b").await.unwrap()).unwrap() });
    until_keys(client, &prefix, 2).await; // a candidate that is not elected changes nothing
    la.resign().await.unwrap();
    let lb = within("failover", rx.recv()).await.unwrap();
    let tb = lb.fencing_token();
    lb.resign().await.unwrap();
    let lc = Election::new(&c, &name).unwrap().campaign("c").await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let info = within("next report", observer.changed()).await.unwrap();
        seen.push(info.map(|l| (String::from_utf8(l.value).unwrap(), l.token)));
    }
    let tc = lc.fencing_token();
    assert_eq!(
        seen,
        [Some(("a".into(), ta)), Some(("a2".into(), ta)), Some(("b".into(), tb)), None, Some(("c".into(), tc)),]
    );
    assert!(ta < tb && tb < tc);
    let mut late = Election::new(&b, &name).unwrap().observe();
    assert_eq!(within("late observer", late.changed()).await.unwrap().map(|l| l.token), Some(tc));
}

/// An observer keeps reporting across a cut connection: its view resynchronises instead of
/// stopping, and reports the state it finds.
pub async fn election_observe_survives_a_broken_watch(client: &Client, cut: &(dyn Fn(bool) + Sync)) {
    let name = fresh("elect-resync");
    let s = client.session().await.unwrap();
    let election = Election::new(&s, &name).unwrap();
    let mut observer = election.observe();
    assert_eq!(within("first report", observer.changed()).await.unwrap(), None);
    cut(true);
    cut(false);
    let leadership = election.campaign("after the cut").await.unwrap();
    let info = within("report after the cut", observer.changed()).await.unwrap().expect("a leader");
    assert_eq!((info.value.as_slice(), info.token), (&b"after the cut"[..], leadership.fencing_token()));
    leadership.resign().await.unwrap();
    assert_eq!(within("no leader", observer.changed()).await.unwrap(), None);
}

/// Over many terms and three sessions, each new leadership's token is greater than the
/// previous one's, and an observer sees them in that order.
pub async fn election_tokens_increase_across_terms(client: &Client) {
    let name = fresh("elect-terms");
    let sessions = sessions(client, 3).await;
    let mut observer = Election::new(&sessions[0], &name).unwrap().observe();
    assert_eq!(within("first report", observer.changed()).await.unwrap(), None);
    let mut tokens = Vec::new();
    for term in 0..9 {
        let election = Election::new(&sessions[term % 3], &name).unwrap();
        let l = election.campaign(format!("term {term}")).await.unwrap();
        tokens.push(l.fencing_token());
        l.resign().await.unwrap();
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let mut observed = Vec::new();
    while observed.len() < tokens.len() {
        if let Some(info) = within("observed term", observer.changed()).await.unwrap() {
            observed.push(info.token);
        }
    }
    assert_eq!(observed, tokens);
}

/// Two campaigns through one session share its key, so the second waits until the first
/// leadership resigns (it must not come back as a second leader on the same key), and then
/// starts a new term with its own value.
pub async fn election_one_campaign_per_session(client: &Client) {
    let name = fresh("elect-same-session");
    let s = client.session().await.unwrap();
    let election = Election::new(&s, &name).unwrap();
    let first = election.campaign("first").await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let second = election.clone();
    tokio::spawn(async move { tx.send(second.campaign("second").await.unwrap()).unwrap() });
    // A negative check: the second campaign must not finish while the first term lasts.
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"first");
    let first_token = first.fencing_token();
    first.resign().await.unwrap();
    let next = within("second campaign", rx.recv()).await.unwrap();
    assert!(next.fencing_token() > first_token);
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"second");
}

// ---------------------------------------------------------------------------------------
// Strategies

/// Six candidates, two of each strategy, each leading `terms` times: never two leaders at
/// once (each counts itself in office while it leads, and the store names it as leader),
/// every term's token greater than the term before, and no key left at the end.
pub async fn election_strategies_keep_one_leader(client: &Client, terms: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let name = fresh("elect-strategies");
    let prefix = client.prefix_of(&name).unwrap();
    let in_office = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let strategies = [Strategy::Pessimistic, Strategy::Optimistic, Strategy::Adaptive];
    let mut tasks = Vec::new();
    for (i, s) in sessions(client, 6).await.into_iter().enumerate() {
        let election = Election::new(&s, &name).unwrap().with_strategy(strategies[i % 3]);
        let (in_office, tokens) = (in_office.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for term in 0..terms {
                let l = within("campaign", election.campaign(format!("{i}/{term}"))).await.unwrap();
                let before = in_office.fetch_add(1, Ordering::SeqCst);
                assert_eq!(before, 0, "two leaders at once: {} ({:?}) was elected", i, election.strategy());
                tokens.lock().unwrap().push(l.fencing_token());
                let leader = election.leader().await.unwrap().expect("a leader");
                assert_eq!(leader.token, l.fencing_token(), "the store names another leader");
                in_office.fetch_sub(1, Ordering::SeqCst);
                l.resign().await.unwrap();
            }
            s
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 6 * terms);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens out of order: {tokens:?}");
    assert_eq!(keys(client, &prefix).await, Vec::<String>::new());
}

/// An optimistic candidate writes nothing while someone leads: a try and a timed campaign
/// leave the leader's key alone under the prefix (sampled all through the timed campaign),
/// and once the leader resigns the waiting campaign takes over with a greater token.
pub async fn election_optimistic_candidate_waits_without_a_key(client: &Client) {
    let name = fresh("elect-optimistic");
    let prefix = client.prefix_of(&name).unwrap();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let leader = Election::new(&a, &name).unwrap().campaign("a").await.unwrap();
    let only_leader = vec![leader.key().to_owned()];
    let candidate = Election::new(&b, &name).unwrap().with_strategy(Strategy::Optimistic);
    assert!(candidate.try_campaign("b").await.unwrap().is_none());
    assert_eq!(keys(client, &prefix).await, only_leader);

    let timed = candidate.campaign_timeout("b", Duration::from_millis(300));
    let what = "an optimistic candidate left a key while another led";
    let outcome = keys_stay_while(client, &prefix, &only_leader, what, timed).await;
    assert!(matches!(outcome, Err(Error::Timeout { what: "election", .. })), "{outcome:?}");
    b.settle().await;
    assert_eq!(keys(client, &prefix).await, only_leader);

    let (tx, mut rx) = mpsc::unbounded_channel();
    let waiting = candidate.clone();
    tokio::spawn(async move { tx.send(waiting.campaign("b").await.unwrap()).unwrap() });
    let a_token = leader.fencing_token();
    leader.resign().await.unwrap();
    let next = within("optimistic failover", rx.recv()).await.unwrap();
    assert!(next.fencing_token() > a_token);
    assert_eq!(keys(client, &prefix).await, [next.key().to_owned()]);
    assert_eq!(candidate.leader().await.unwrap().map(|l| l.value), Some(b"b".to_vec()));
}

/// An adaptive candidate campaigns by compare-and-swap while it meets nobody (a try that
/// finds a leader writes nothing: the store's revision does not move). At the first leader
/// a waiting campaign meets it queues — that campaign included: it keeps a key behind the
/// leader's rather than waiting without a place, where queued candidates could starve it
/// — and so do its next campaigns (a try then writes its key and withdraws it).
pub async fn election_adaptive_queues_after_meeting_a_leader(client: &Client) {
    let name = fresh("elect-adaptive");
    let prefix = client.prefix_of(&name).unwrap();
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let other = Election::new(&a, &name).unwrap();
    let adaptive = Election::new(&b, &name).unwrap().with_strategy(Strategy::Adaptive);
    adaptive.campaign("b").await.unwrap().resign().await.unwrap(); // uncontended
    let revision = async || client.backend().range_prefix(&prefix, 0).await.unwrap().1;
    let queued_behind = async |leader: Leadership| {
        let waiting = adaptive.clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move { tx.send(waiting.campaign("b").await.unwrap()).unwrap() });
        until_keys(client, &prefix, 2).await; // its key, behind the leader's
        leader.resign().await.unwrap();
        let next = within("queued failover", rx.recv()).await.unwrap();
        assert_eq!(keys(client, &prefix).await, [next.key().to_owned()]);
        next.resign().await.unwrap();
    };

    let leader = other.campaign("a").await.unwrap();
    let before = revision().await;
    assert!(adaptive.try_campaign("b").await.unwrap().is_none());
    assert_eq!(revision().await, before, "a compare-and-swap try wrote");
    queued_behind(leader).await;

    let leader = other.campaign("a").await.unwrap();
    let before = revision().await;
    assert!(adaptive.try_campaign("b").await.unwrap().is_none());
    assert!(revision().await > before, "a queued try writes its key (and deletes it)");
    queued_behind(leader).await;
}

/// A leader loop campaigns with its strategy: an optimistic loop waits without a key while
/// another leads (a negative check over 300 ms: a queued one shows its key within
/// milliseconds), and leads once the other loop stops.
pub async fn leader_loop_optimistic(client: &Client) {
    use leasehold::LeaderLoop;
    let name = fresh("leader-loop-optimistic");
    let prefix = client.prefix_of(&name).unwrap();
    let a = LeaderLoop::new(client, &name, "a").unwrap();
    let mut la = a.leading();
    let a_task = tokio::spawn(async move { a.run(|_| std::future::pending::<()>()).await });
    within("a leads", la.wait_for(|&x| x)).await.unwrap();
    let b = LeaderLoop::new(client, &name, "b").unwrap().strategy(Strategy::Optimistic);
    let mut lb = b.leading();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b_task = tokio::spawn(async move {
        b.run(|l| {
            let tx = tx.clone();
            async move {
                tx.send(l.fencing_token()).unwrap();
                std::future::pending::<()>().await
            }
        })
        .await
    });
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < until {
        assert_eq!(keys(client, &prefix).await.len(), 1, "an optimistic loop left a key while another led");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a_token = client.leader(&name).await.unwrap().expect("a leads").token;
    a_task.abort(); // a stops: its leadership is released
    within("b leads", lb.wait_for(|&x| x)).await.unwrap();
    assert!(within("b's work", rx.recv()).await.unwrap() > a_token);
    b_task.abort();
}

/// A session closed through another of its handles ends what it holds and waits for: the
/// leadership's `lost()` completes (its key went with the revoked lease) and a campaign
/// that waits — queued, or compare-and-swap waiting for the leader to leave — fails with
/// `SessionClosed`, for every strategy. (`lost()` waited for a loss that a close never
/// reports, and the compare-and-swap candidate waited until the leader left.)
pub async fn closing_the_session_ends_its_leadership_and_campaigns(client: &Client) {
    let name = fresh("closed-campaign");
    let (a, b) = (client.session().await.unwrap(), client.session().await.unwrap());
    let leader = Election::new(&a, &name).unwrap().campaign("a").await.unwrap();
    for strategy in [Strategy::Pessimistic, Strategy::Optimistic, Strategy::Adaptive] {
        let c = client.session().await.unwrap();
        let campaign = {
            let e = Election::new(&c, &name).unwrap().with_strategy(strategy);
            tokio::spawn(async move { e.campaign("c").await.map(|_| ()) })
        };
        // Time to begin waiting (the check does not depend on it: a campaign that had not
        // would fail at once, as closed).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!campaign.is_finished(), "{strategy:?}: the campaign did not wait for the leader");
        c.clone().close().await.unwrap();
        let what = format!("{strategy:?}: a campaign of a closed session");
        let ended = within(&what, campaign).await.unwrap();
        assert!(matches!(ended, Err(Error::SessionClosed { .. })), "{strategy:?}: {ended:?}");
    }
    let lost = leader.lost();
    a.clone().close().await.unwrap();
    within("a closed session's leadership's lost()", lost).await;
    // Work under a lock stops the same way, and says why.
    let d = client.session().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let work = {
        let m = leasehold::Mutex::new(&d, &fresh("closed-work")).unwrap();
        tokio::spawn(async move {
            m.with_lock(async |_| {
                tx.send(()).unwrap();
                std::future::pending::<()>().await
            })
            .await
        })
    };
    within("the work started", rx).await.unwrap();
    d.clone().close().await.unwrap();
    let stopped = within("work under a closed session's lock", work).await.unwrap();
    assert!(matches!(stopped, Err(Error::SessionClosed { .. })), "{stopped:?}");
    b.close().await.unwrap();
}

/// An acquisition waiting behind another task of its own session (for the session's one
/// place per key) ends when the session does, like one waiting behind another session's
/// holder: it used to wait for the other task's guard, for good if that guard was kept.
pub async fn a_wait_behind_the_sessions_own_holder_ends_with_the_session(client: &Client) {
    let name = fresh("own-holder");
    // A mutex, then a campaign, each behind a holder of the same session.
    for campaign in [false, true] {
        let c = client.session().await.unwrap();
        let held: Box<dyn std::any::Any + Send> = if campaign {
            Box::new(Election::new(&c, &name).unwrap().campaign("first").await.unwrap())
        } else {
            Box::new(leasehold::Mutex::new(&c, &name).unwrap().lock().await.unwrap())
        };
        let second = {
            let c = c.clone();
            let name = name.clone();
            tokio::spawn(async move {
                if campaign {
                    Election::new(&c, &name).unwrap().campaign("second").await.map(|_| ())
                } else {
                    leasehold::Mutex::new(&c, &name).unwrap().lock().await.map(|_| ())
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "campaign {campaign}: the second did not wait for the first");
        c.clone().close().await.unwrap();
        let what = format!("campaign {campaign}: a wait behind its own session's holder, the session closed");
        let ended = within(&what, second).await.unwrap();
        assert!(matches!(ended, Err(Error::SessionClosed { .. })), "campaign {campaign}: {ended:?}");
        drop(held);
    }
}
