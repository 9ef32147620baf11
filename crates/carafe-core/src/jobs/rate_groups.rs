//! Rate groups: one rate limit shared by several queues, kept in the database so every
//! instance obeys it. A queue in a group is claimed only while both its own limits and the
//! group's allow it. Mail uses one group per SMTP relay, so transactional mail and every
//! campaign sending through a relay share that relay's rate, burst and hourly/daily caps.
//!
//! A group slows down when told the far end is throttling (e.g. an SMTP `454`): its rate
//! halves (multiplicative decrease, at most once a second, never below 1/32 of the rate set)
//! and grows back linearly to the rate set over `RECOVERY` (additive increase), as TCP
//! does. The state is a few numbers on the group's row, so the slow-down is shared too and
//! needs no background task: the current rate is computed at each claim.

use std::time::Duration;

use time::OffsetDateTime;

/// How long a group slowed to half its rate takes to grow back to the full rate.
pub const RECOVERY: Duration = Duration::from_secs(60);
/// A group is slowed at most once in this long: the sends in flight when it slowed were
/// claimed at the old rate, and their throttled replies should not halve it again.
pub const SLOW_HOLD: Duration = Duration::from_secs(1);
/// A slowed group never drops below the rate set divided by this.
pub const SLOWEST: f64 = 32.0;

/// A group's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateGroup {
    pub name: String,
    /// Claims per second on average.
    pub rate_per_second: f64,
    /// The most claims at once after a quiet spell (the bucket's size; at least 1).
    pub burst: u32,
    /// At most this many claims in one calendar hour (UTC).
    pub hourly: Option<u64>,
    /// At most this many claims in one calendar day (UTC).
    pub daily: Option<u64>,
}

impl RateGroup {
    /// Checks the settings; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate_per_second > 0.0 && self.rate_per_second <= 1_000_000.0) {
            return Err("the rate must be above 0 and at most 1000000 per second".into());
        }
        if self.burst == 0 {
            return Err("the burst must be at least 1".into());
        }
        if self.hourly == Some(0) || self.daily == Some(0) {
            return Err("hourly and daily caps must be at least 1".into());
        }
        Ok(())
    }
}

/// A group's settings and where its limits stand.
#[derive(Debug, Clone, PartialEq)]
pub struct RateGroupState {
    pub group: RateGroup,
    /// The bucket's level at `tokens_at`.
    pub tokens: f64,
    pub tokens_at: OffsetDateTime,
    /// The rate the group was slowed to, and when (`None`: never slowed).
    pub slowed_rate: Option<f64>,
    pub slowed_at: Option<OffsetDateTime>,
    /// Claims counted in the hour (and day) that starts at `hour_start` (`day_start`).
    pub hour_start: OffsetDateTime,
    pub hour_count: u64,
    pub day_start: OffsetDateTime,
    pub day_count: u64,
}

fn hour_of(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_time(time::Time::from_hms(t.hour(), 0, 0).expect("valid"))
}

fn day_of(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
        .replace_time(time::Time::MIDNIGHT)
}

impl RateGroupState {
    /// A group that has claimed nothing yet: its bucket full.
    pub fn new(group: RateGroup, now: OffsetDateTime) -> Self {
        RateGroupState {
            tokens: f64::from(group.burst),
            tokens_at: now,
            slowed_rate: None,
            slowed_at: None,
            hour_start: hour_of(now),
            hour_count: 0,
            day_start: day_of(now),
            day_count: 0,
            group,
        }
    }

    /// The rate claims may go at now: the rate set, or less while recovering from a slow-down.
    pub fn current_rate(&self, now: OffsetDateTime) -> f64 {
        let rate = self.group.rate_per_second;
        match (self.slowed_rate, self.slowed_at) {
            (Some(slowed), Some(at)) => {
                let since = (now - at).as_seconds_f64().max(0.0);
                let grown = slowed + rate / 2.0 * since / RECOVERY.as_secs_f64();
                grown.min(rate)
            }
            _ => rate,
        }
    }

    /// The group's state at `now` (bucket refilled at the current rate, windows moved on)
    /// and how many of `max` claims it allows. Charge the claims made with `spend`.
    pub fn allowance(&self, max: u32, now: OffsetDateTime) -> (u32, RateGroupState) {
        let mut s = self.clone();
        let at = now.max(self.tokens_at);
        // Refilled at the rate at the end of the interval: a recovering group grows a
        // little faster than exactly, which errs on the side of sending.
        let rate = self.current_rate(at);
        let elapsed = (at - self.tokens_at).as_seconds_f64().max(0.0);
        s.tokens = (self.tokens + elapsed * rate).min(f64::from(self.group.burst));
        s.tokens_at = at;
        if hour_of(at) != s.hour_start {
            s.hour_start = hour_of(at);
            s.hour_count = 0;
        }
        if day_of(at) != s.day_start {
            s.day_start = day_of(at);
            s.day_count = 0;
        }
        let mut allowed = u64::from(max).min(s.tokens.max(0.0).floor() as u64);
        if let Some(cap) = s.group.hourly {
            allowed = allowed.min(cap.saturating_sub(s.hour_count));
        }
        if let Some(cap) = s.group.daily {
            allowed = allowed.min(cap.saturating_sub(s.day_count));
        }
        (allowed as u32, s)
    }

    /// Charges `claimed` claims (made under the allowance this state came from).
    pub fn spend(&mut self, claimed: u64) {
        self.tokens -= claimed as f64;
        self.hour_count += claimed;
        self.day_count += claimed;
    }

    /// Slows the group down at `now`: half the current rate (not below the floor), the
    /// bucket emptied. `false` when it was slowed within `SLOW_HOLD` (nothing changes).
    pub fn slow_down(&mut self, now: OffsetDateTime) -> bool {
        if let Some(at) = self.slowed_at
            && (now - at).as_seconds_f64() < SLOW_HOLD.as_secs_f64()
            && now >= at
        {
            return false;
        }
        let rate = self.group.rate_per_second;
        let (_, refilled) = self.allowance(0, now);
        *self = refilled;
        let half = (self.current_rate(now) / 2.0).max(rate / SLOWEST);
        self.slowed_rate = Some(half);
        self.slowed_at = Some(now);
        self.tokens = self.tokens.min(0.0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(rate: f64, burst: u32) -> RateGroup {
        RateGroup {
            name: "g".into(),
            rate_per_second: rate,
            burst,
            hourly: None,
            daily: None,
        }
    }

    fn t0() -> OffsetDateTime {
        // 2026-01-01 10:00:00 UTC
        OffsetDateTime::from_unix_timestamp(1_767_261_600).unwrap()
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let s = RateGroupState::new(group(10.0, 25), t0());
        let (n, mut s) = s.allowance(100, t0());
        assert_eq!(n, 25, "a full bucket allows the burst");
        s.spend(25);
        let later = t0() + Duration::from_millis(500);
        let (n, _) = s.allowance(100, later);
        assert_eq!(n, 5, "then ten a second");
    }

    #[test]
    fn hourly_and_daily_caps_count_claims_and_reset_with_the_calendar() {
        let mut g = group(1000.0, 1000);
        g.hourly = Some(30);
        g.daily = Some(50);
        let s = RateGroupState::new(g, t0());
        let (n, mut s) = s.allowance(100, t0());
        assert_eq!(n, 30);
        s.spend(30);
        let (n, s2) = s.allowance(100, t0() + Duration::from_secs(1800));
        assert_eq!(n, 0, "the hour's cap is spent");
        let (n, mut s3) = s2.allowance(100, t0() + Duration::from_secs(3600));
        assert_eq!(n, 20, "a new hour, but the day has 20 left");
        s3.spend(20);
        let next_day = t0() + Duration::from_secs(14 * 3600);
        let (n, s4) = s3.allowance(100, next_day);
        assert_eq!((n, s4.day_count, s4.hour_count), (30, 0, 0));
    }

    #[test]
    fn slowing_down_halves_the_rate_once_a_second_and_recovers_linearly() {
        let mut s = RateGroupState::new(group(100.0, 100), t0());
        assert!(s.slow_down(t0()));
        assert_eq!(s.current_rate(t0()), 50.0);
        assert_eq!(s.allowance(100, t0()).0, 0, "the bucket was emptied");
        assert!(!s.slow_down(t0() + Duration::from_millis(500)), "held");
        assert_eq!(s.current_rate(t0() + Duration::from_secs(30)), 75.0);
        assert_eq!(s.current_rate(t0() + Duration::from_secs(60)), 100.0);
        assert_eq!(s.current_rate(t0() + Duration::from_secs(600)), 100.0);
        let t1 = t0() + Duration::from_secs(2);
        assert!(s.slow_down(t1));
        let r = s.current_rate(t1);
        assert!((r - 25.83).abs() < 0.01, "{r}: half of 51.67");
        for i in 0..20 {
            s.slow_down(t1 + Duration::from_secs(2 * (i + 1)));
        }
        let floor = s.current_rate(s.slowed_at.unwrap());
        assert_eq!(floor, 100.0 / SLOWEST, "never below the floor");
    }

    #[test]
    fn settings_are_checked() {
        assert!(group(0.0, 1).check().is_err());
        assert!(group(1.0, 0).check().is_err());
        let mut g = group(1.0, 1);
        g.daily = Some(0);
        assert!(g.check().is_err());
        assert!(group(0.5, 1).check().is_ok());
    }
}
