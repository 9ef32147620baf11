//! Queue-wide settings and figures: the limits claims obey, and the per-queue counts
//! `GET /api/v1/queues` shows.

use std::time::Duration;

use time::OffsetDateTime;

use super::JobState;

/// Limits on how fast a queue's jobs are claimed, across every instance and worker, and how
/// long a claim holds a job without a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueLimits {
    /// At most this many of the queue's jobs run at once.
    pub concurrency: Option<u32>,
    /// At most this many claims per second on average (a token bucket holding one second).
    pub rate_per_second: Option<f64>,
    /// The lease of a claim or heartbeat that names none; `None` uses the server's default.
    pub lease: Option<Duration>,
}

impl QueueLimits {
    /// Whether claims must count running jobs or spend tokens.
    pub fn limits_claims(&self) -> bool {
        self.concurrency.is_some() || self.rate_per_second.is_some()
    }
}

/// Per-queue figures for `GET /api/v1/queues`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub queue: String,
    pub paused: bool,
    pub limits: QueueLimits,
    /// Jobs per effective state.
    pub counts: Vec<(JobState, u64)>,
    /// When the oldest job that could run now became available.
    pub oldest_available_at: Option<OffsetDateTime>,
    /// Jobs completed in the last minute.
    pub completed_last_minute: u64,
}

/// One row of per-queue figures as a store counts them (by queue and effective state).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCount {
    pub queue: String,
    pub state: JobState,
    pub jobs: u64,
    pub oldest_available_at: Option<OffsetDateTime>,
    pub completed_last_minute: u64,
}

impl QueueStats {
    /// Folds count rows and queue settings (`name, paused, limits`) into one entry per queue,
    /// by name. A queue with settings but no jobs is listed too.
    pub fn collect(
        counts: Vec<QueueCount>,
        settings: Vec<(String, bool, QueueLimits)>,
    ) -> Vec<QueueStats> {
        use std::collections::BTreeMap;
        fn entry<'a>(map: &'a mut BTreeMap<String, QueueStats>, name: &str) -> &'a mut QueueStats {
            map.entry(name.to_owned()).or_insert_with(|| QueueStats {
                queue: name.to_owned(),
                paused: false,
                limits: QueueLimits::default(),
                counts: Vec::new(),
                oldest_available_at: None,
                completed_last_minute: 0,
            })
        }
        let mut by_name = BTreeMap::new();
        for c in counts {
            let s = entry(&mut by_name, &c.queue);
            s.counts.push((c.state, c.jobs));
            if let Some(t) = c.oldest_available_at {
                s.oldest_available_at = Some(s.oldest_available_at.map_or(t, |o| o.min(t)));
            }
            s.completed_last_minute += c.completed_last_minute;
        }
        for (name, paused, limits) in settings {
            let s = entry(&mut by_name, &name);
            s.paused = paused;
            s.limits = limits;
        }
        by_name.into_values().collect()
    }
}
