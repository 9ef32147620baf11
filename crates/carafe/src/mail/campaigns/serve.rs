//! Sending from campaigns' queues. Every instance serves the queue of each started campaign
//! (its messages' send jobs), with the same handler as `carafe.mail`: the queue's pause and
//! rate are kept in the database, so every instance obeys them. The set of started campaigns
//! is read again when one starts or ends here (a bus wake-up) and every few seconds (one
//! started on another instance); a campaign that is no longer started stops being served,
//! after its running sends finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use carafe_core::campaigns::CampaignId;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{CAMPAIGNS_TOPIC, step_job};
use crate::jobs::Jobs;
use crate::jobs::runner::Handlers;
use crate::mail::submit::campaign_queue;
use crate::mail::{MailJobs, Mailer};

/// How often the set of started campaigns is read again without a wake-up.
const RECHECK: Duration = Duration::from_secs(2);

/// Serves started campaigns' queues until `stop`, running at most `concurrency` sends per
/// campaign (the relay's own cap bounds them all).
pub async fn serve(
    mailer: Arc<Mailer>,
    jobs: Arc<Jobs>,
    worker: String,
    concurrency: usize,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut served: HashMap<CampaignId, CancellationToken> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut first_look = true;
    while !stop.is_cancelled() {
        let mut woken = jobs.bus().subscribe();
        match mailer.store().started_campaigns().await {
            Ok(started) => {
                served.retain(|id, token| {
                    let keep = started.contains(id);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for id in started {
                    if served.contains_key(&id) {
                        continue;
                    }
                    // After a restart, make sure a campaign that was being expanded goes on
                    // (the job's unique key makes this a no-op when its job is alive).
                    if first_look {
                        let job = step_job(id, "expand", carafe_core::time::now());
                        if let Err(e) = jobs.enqueue(vec![job]).await {
                            tracing::warn!(error = %e, campaign = %id, "re-enqueueing expansion failed");
                        }
                    }
                    let token = stop.child_token();
                    let handlers = Handlers::new().add(
                        &campaign_queue(id),
                        concurrency,
                        MailJobs::new(mailer.clone()),
                    );
                    tasks.spawn(handlers.run(jobs.clone(), worker.clone(), token.clone(), drain));
                    served.insert(id, token);
                }
                first_look = false;
            }
            Err(e) => tracing::warn!(error = %e, "listing started campaigns failed; retrying"),
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = woken.wait_for(CAMPAIGNS_TOPIC, RECHECK) => {}
            () = stop.cancelled() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}
