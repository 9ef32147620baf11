//! The job engine over HTTP: enqueueing and reading jobs, queues, the pull-worker protocol,
//! live events, workflows and schedules. Handlers parse, call the `jobs` capability and map
//! its answers.

pub mod enqueue;
pub mod events;
pub mod schedules;
pub mod views;
pub mod workers;
pub mod workflows;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::Layers;
use crate::api::state::AppState;

pub fn routes(layers: &Layers) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(layers.idempotent(routes!(enqueue::enqueue)))
        .routes(routes!(enqueue::list))
        .routes(layers.idempotent(routes!(enqueue::enqueue_batch)))
        .routes(routes!(enqueue::get))
        .routes(routes!(enqueue::cancel))
        .routes(routes!(enqueue::retry))
        .routes(routes!(events::stream))
        .routes(routes!(workers::claim))
        .routes(routes!(workers::heartbeat))
        .routes(routes!(workers::progress))
        .routes(routes!(workers::complete))
        .routes(routes!(workers::complete_batch))
        .routes(routes!(workers::fail))
        .routes(routes!(enqueue::queues))
        .routes(routes!(enqueue::configure))
        .routes(routes!(enqueue::pause))
        .routes(routes!(enqueue::resume))
        .routes(layers.idempotent(routes!(workflows::create)))
        .routes(routes!(workflows::get))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::put, schedules::get, schedules::delete))
}
