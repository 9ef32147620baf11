//! A rough measure of the batch paths: insert 1,000 jobs in one call, claim them 100 at a
//! time, complete them 100 at a time. Prints milliseconds; asserts nothing about speed.
//!
//! `CARAFE_TEST_POSTGRES_URL=postgres://… cargo run -p carafe-store-postgres --example throughput`

use std::time::{Duration, Instant};

use carafe_core::jobs::{Claim, Completion, Fenced, LeaseLength, NewJob, QueueName};
use carafe_core::store::prelude::*;
use carafe_store_postgres::PgStore;
use carafe_store_postgres::testing::fresh_database_url;
use serde_json::json;

const JOBS: usize = 1000;
const BATCH: u32 = 100;
const ROUNDS: usize = 5;

#[tokio::main]
async fn main() {
    let store = PgStore::connect(&fresh_database_url().await, 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let queue = QueueName::parse("bench").unwrap();
    println!("round  insert 1000 (1 call)  claim 10x100  complete 10x100   (ms)");
    for round in 1..=ROUNDS {
        let now = carafe_core::time::now();
        let jobs: Vec<NewJob> = (0..JOBS)
            .map(|i| NewJob {
                queue: queue.clone(),
                args: json!({"n": i, "to": "someone@example.com"}),
                priority: (i % 3) as i16,
                max_attempts: 3,
                backoff: None,
                timeout: Duration::from_secs(60),
                scheduled_at: now,
                unique: None,
                owner: None,
                target: None,
                created_at: now,
            })
            .collect();
        let start = Instant::now();
        store.insert_jobs(jobs).await.unwrap();
        let insert = start.elapsed();

        let start = Instant::now();
        let mut claimed = Vec::with_capacity(JOBS);
        loop {
            let claim = Claim {
                queue: &queue,
                worker: "bench",
                max: BATCH,
                lease: LeaseLength {
                    asked: None,
                    default: Duration::from_secs(60),
                },
                now,
                push: false,
            };
            let got = store.claim_jobs(claim).await.unwrap();
            if got.is_empty() {
                break;
            }
            claimed.extend(got);
        }
        let claim = start.elapsed();
        assert_eq!(claimed.len(), JOBS);

        let start = Instant::now();
        for chunk in claimed.chunks(BATCH as usize) {
            let items: Vec<_> = chunk
                .iter()
                .map(|c| Completion {
                    id: c.id,
                    lease_token: c.lease_token.clone(),
                    result: json!({"ok": true}),
                    outside: false,
                })
                .collect();
            let done = store.complete_jobs(&items, now).await.unwrap().outcome;
            assert!(done.iter().all(Fenced::is_done));
        }
        let complete = start.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{round:>5}  {:>20.1}  {:>12.1}  {:>15.1}",
            ms(insert),
            ms(claim),
            ms(complete)
        );
    }
    store.close().await;
}
