//! The fault steps: a whole cluster cut off and healed, and the final
//! read of every acknowledged record.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{KafkaLab, PRODUCE_DEADLINE, PROGRESS, STOP_GRACE, caught_up};

const LOSS_DEADLINE: Duration = Duration::from_secs(60);
/// Cut brokers catching up after the link comes back: on a loaded 2-core
/// VM one took longer than 120 s (controller events averaging 18 ms).
const HEAL_DEADLINE: Duration = Duration::from_secs(240);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl KafkaLab<'_> {
    /// Cuts `cluster` off; each side must keep (or lose) its quorum leader
    /// as analysed; the keeping side's producers keep being acknowledged,
    /// a side without a leader is acknowledged nothing.
    pub fn cut(&mut self, cluster: usize, keeps: bool, isolated_keeps: bool) -> String {
        let case = self.case;
        let all = self.all_clusters();
        // What follows assumes every replica is in sync when the link goes:
        // a follower that fell behind on this busy machine (and left the
        // ISR, as Kafka lets it) would leave a cut replica as the last one
        // in sync, which Kafka never removes.
        let broker = self.broker_in(self.broker_clusters()[0]).unwrap();
        let resynced = self.isr_whole(broker).err().map(|_| {
            let since = Instant::now();
            self.wait(
                "every ISR whole before the cut",
                since,
                HEAL_DEADLINE,
                |lab| lab.isr_whole(broker),
            )
            .1
        });
        let before = self.side_leader(&all).map(|s| s.leader).unwrap_or(-1);
        let survivors: Vec<usize> = all.iter().copied().filter(|c| *c != cluster).collect();
        let t0 = Instant::now();
        let cut_ms = now_ms();
        let timeouts_before = self.setup_timeouts();
        self.net.cut(cluster);
        let (_, lost) = self.wait(
            "the cut-off side loses its leader",
            t0,
            LOSS_DEADLINE,
            |lab| {
                let mut gone = Vec::new();
                if !isolated_keeps {
                    gone.push(
                        lab.side_leader(&[cluster])
                            .err()
                            .ok_or("the cut-off side still has a leader")?,
                    );
                }
                if !keeps {
                    gone.push(
                        lab.side_leader(&survivors)
                            .err()
                            .ok_or("the survivors still have a leader")?,
                    );
                }
                Ok(gone)
            },
        );
        let (status, settled) = self.wait("the survivors' leader", t0, LOSS_DEADLINE, |lab| {
            if keeps {
                lab.side_leader(&survivors).map(Some)
            } else {
                Ok(None)
            }
        });
        let settled_ms = now_ms();
        let mut details = format!(
            "leader before: id {before}; cut-off side without a leader {lost:.1?} after the cut"
        );
        if let Some(took) = resynced {
            details += &format!(" (first waited {took:.1?} for every ISR to be whole)");
        }
        let producing: Vec<usize> = self
            .broker_clusters()
            .into_iter()
            .filter(|c| *c != cluster)
            .collect();
        if status.is_some()
            && let Some(via) = producing.first().and_then(|c| self.broker_in(*c))
        {
            // Which partitions the survivors can still write with acks=all
            // (ISR at least min.insync.replicas=2, once the cut replicas left it).
            let ((writable, total), shrunk) =
                self.wait("the ISRs shrink", Instant::now(), PRODUCE_DEADLINE, |lab| {
                    let parts = lab.partitions(via)?;
                    let cut: BTreeSet<u32> = case.in_cluster(cluster).map(|n| n.id).collect();
                    if parts
                        .values()
                        .any(|(_, _, isr)| isr.iter().any(|r| cut.contains(r)))
                    {
                        return Err(format!("cut replicas still in an ISR: {parts:?}"));
                    }
                    let writable = parts.values().filter(|(_, _, isr)| isr.len() >= 2).count();
                    // The partitions acks=all can still write: those with
                    // at least min.insync.replicas=2 replicas outside the
                    // cut cluster (explain's warning when brokers run in
                    // fewer than three clusters).
                    let expected = parts
                        .values()
                        .filter(|(_, r, _)| r.iter().filter(|r| !cut.contains(r)).count() >= 2)
                        .count();
                    if writable != expected {
                        return Err(format!(
                            "{writable} partitions keep 2 in-sync replicas, {expected} have 2 replicas outside the cut: {parts:?}"
                        ));
                    }
                    Ok((writable, parts.len()))
                });
            details += &format!(
                "; cut replicas left every ISR {shrunk:.1?} later, {writable} of {total} partitions keep 2 in-sync replicas (acks=all writable)"
            );
        }
        if let Some(s) = status {
            let (_, resumed) = self.wait(
                "producing on the surviving side",
                Instant::now(),
                PRODUCE_DEADLINE,
                // The side keeps producing: its producers together are
                // acknowledged again. (Each one alone is not required: a
                // producer can go without acknowledgements for over 90 s
                // after a cut while another is acknowledged (CloudPirates'
                // witness after west was cut; cp's cluster-1 after
                // cluster-0 was cut, with records spread round-robin); the
                // first acknowledgement after the cut per producer and its
                // client's connection setup timeouts are reported.)
                |lab| {
                    let total: usize = lab.acks_since(&producing, settled_ms).values().sum();
                    if total >= PROGRESS {
                        Ok(())
                    } else {
                        Err(format!("{total} acknowledgements on the surviving side"))
                    }
                },
            );
            thread::sleep(Duration::from_secs(5));
            let counts: BTreeMap<&str, usize> = self
                .acks_since(&producing, settled_ms)
                .into_iter()
                .map(|(c, n)| (case.cluster_name(c), n))
                .collect();
            // Per surviving producer: its first acknowledgement after the
            // cut, and the connections its client gave up on (to the cut
            // brokers, whose packets are dropped: each costs the
            // connection setup timeout, 10 s doubling to 30 s, and a
            // metadata request sent there waits as long).
            let first: BTreeMap<&str, String> = producing
                .iter()
                .map(|&c| {
                    let at = self
                        .acked()
                        .values()
                        .filter(|(pc, ts)| *pc == c && *ts > cut_ms)
                        .map(|(_, ts)| ts - cut_ms)
                        .min();
                    (
                        case.cluster_name(c),
                        at.map_or("none yet".into(), |ms| {
                            format!("{:.1}s", ms as f64 / 1000.0)
                        }),
                    )
                })
                .collect();
            let timeouts: BTreeMap<&str, usize> = self
                .setup_timeouts()
                .into_iter()
                .filter(|(c, _)| producing.contains(c))
                .map(|(c, n)| {
                    (
                        case.cluster_name(c),
                        n - timeouts_before.get(&c).unwrap_or(&0),
                    )
                })
                .collect();
            details += &format!(
                "; survivors' leader id {} ({}) {settled:.1?} after the cut; acks=all producing acknowledged again {resumed:.1?} later (acknowledgements per producer 5 s after: {counts:?}; first after the cut: {first:?}; connection setup timeouts: {timeouts:?})",
                s.leader,
                case.cluster_name(case.voter_cluster(s.leader as u32))
            );
        }
        // Still cut: the isolated side must be acknowledged nothing.
        // From 2 s after the cut: a record the other clusters' replicas
        // fetched before the cut may be acknowledged just after it (seen
        // in ZooKeeper mode, where the survivors settle within 0.1 s: 9
        // acknowledgements within 0.1 s of the cut, the producer just
        // resumed from the reads' pause); such a record is safe, and the
        // final read proves it.
        let isolated = self.acks_since(&[cluster], settled_ms.max(cut_ms + 2000))[&cluster];
        if !isolated_keeps && self.broker_in(cluster).is_some() {
            assert_eq!(
                isolated,
                0,
                "{}: the producer in cut-off {} was acknowledged {isolated} records without a quorum",
                case.spec,
                case.cluster_name(cluster)
            );
            details += "; cut-off producer acknowledged nothing";
        }
        details
    }

    /// Restores `cluster`: every voter caught up, every partition's ISR
    /// whole, its producer acknowledged again, and it reads every
    /// acknowledged record.
    pub fn heal(&mut self, cluster: usize) -> String {
        let case = self.case;
        let t0 = Instant::now();
        let healed_ms = now_ms();
        self.net.restore(cluster);
        let voters: BTreeSet<u32> = case.quorum.voters.iter().map(|v| v.id).collect();
        let via = case
            .in_cluster(cluster)
            .find(|n| n.controller)
            .map(|n| n.id);
        let all = self.all_clusters();
        let (leader, quorum) = self.wait("one leader again", t0, HEAL_DEADLINE, |lab| {
            lab.side_leader(&all).map(|s| s.leader)
        });
        // ZooKeeper: one leader seen with every server serving (above).
        let (_, voters_back) = self.wait("every voter caught up", t0, HEAL_DEADLINE, |lab| {
            if case.zookeeper_mode() {
                return Ok(BTreeMap::new());
            }
            caught_up(&lab.replication(via.unwrap_or(leader as u32))?, &voters)
        });
        let rejoined = self.broker_in(cluster);
        let broker = rejoined.unwrap_or_else(|| self.broker_in(self.broker_clusters()[0]).unwrap());
        let (_, isr) = self.wait("every ISR whole", t0, HEAL_DEADLINE, |lab| {
            lab.isr_whole(broker)
        });
        let mut details = format!(
            "one leader (id {leader}) {quorum:.1?} after the link came back, every voter caught up {voters_back:.1?}, every ISR whole {isr:.1?} (cut brokers caught up)"
        );
        if rejoined.is_some() {
            let (_, producing) = self.wait("the rejoined producer", t0, HEAL_DEADLINE, |lab| {
                lab.progress(&[cluster], healed_ms, PROGRESS)
            });
            let read = self.expect_read(
                broker,
                &format!("reads on {} after it rejoined", case.cluster_name(cluster)),
            );
            details += &format!(
                ", its producer acknowledged again {producing:.1?}; {} read all {} acknowledged records ({read:.1?})",
                case.who(broker),
                self.acked().len()
            );
        }
        details
    }

    /// Ok when every partition's ISR holds all its replicas (asked
    /// through broker `via`).
    fn isr_whole(&self, via: u32) -> Result<(), String> {
        let shrunk: Vec<_> = self
            .partitions(via)?
            .into_iter()
            .filter(|(_, (_, r, isr))| r.len() != isr.len())
            .collect();
        if shrunk.is_empty() {
            Ok(())
        } else {
            Err(format!("ISRs short of their replicas: {shrunk:?}"))
        }
    }

    /// Stops the producers (they flush) and reads everything in every cluster.
    pub fn finish(&mut self) -> String {
        for p in &mut self.producers {
            p.process.stop(STOP_GRACE);
        }
        let per_cluster: BTreeMap<&str, usize> =
            self.acked()
                .values()
                .fold(BTreeMap::new(), |mut m, (c, _)| {
                    *m.entry(self.case.cluster_name(*c)).or_default() += 1;
                    m
                });
        let read = self.expect_read_everywhere("the end");
        format!(
            "{} acknowledged records ({per_cluster:?} by producer cluster) read in every cluster ({read:.1?})",
            self.acked().len()
        )
    }
}
