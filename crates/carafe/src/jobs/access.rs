//! Who may act on a reserved queue. Queues named `carafe.*` carry Carafe's own work — file
//! processing, purges, and later mail and notifications — whose handlers keep rules (a file
//! is served only after its scan; a deletion purges its bytes) that a job finished by anyone
//! else would skip. So the one rule lives here, and every route that names a queue or acts on
//! a job asks it before doing anything:
//!
//! - nobody claims, reports on (heartbeat, progress, complete, fail), cancels, enqueues into or
//!   reconfigures a reserved queue over the API: only Carafe's in-process handlers run them;
//! - admins may read them, pause and resume them, and retry their jobs (an operator's tools);
//! - a key holding the scope of the capability a queue belongs to (`files` for
//!   `carafe.files`) may read its jobs, so an application can follow its upload's processing.

use carafe_core::jobs::QueueName;
use carafe_core::keys::{Scope, Scopes};

use crate::context::Principal;

/// What a caller wants to do with a queue or one of its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Look at a job, its events, or the queue's figures.
    Read,
    Enqueue,
    Claim,
    /// Heartbeat, progress, complete or fail: the lease holder's reports.
    Report,
    Cancel,
    Retry,
    Pause,
    /// Set the queue's limits and lease.
    Configure,
}

impl QueueAction {
    fn verb(self) -> &'static str {
        match self {
            QueueAction::Read => "read",
            QueueAction::Enqueue => "enqueue into",
            QueueAction::Claim => "claim from",
            QueueAction::Report => "report on jobs of",
            QueueAction::Cancel => "cancel jobs of",
            QueueAction::Retry => "retry jobs of",
            QueueAction::Pause => "pause or resume",
            QueueAction::Configure => "configure",
        }
    }
}

/// Who is acting, as far as reserved queues are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// A server API key without `admin`, with its scopes.
    Key(Scopes),
    /// An end user's token.
    User,
}

impl Caller {
    /// The caller as this rule sees it.
    pub fn of(principal: &Principal) -> Caller {
        match principal {
            Principal::Key(k) => Caller::from_key_scopes(k.scopes),
            Principal::User(_) => Caller::User,
        }
    }

    pub fn from_key_scopes(scopes: Scopes) -> Caller {
        if scopes.contains_exactly(Scope::Admin) {
            Caller::Admin
        } else {
            Caller::Key(scopes)
        }
    }
}

/// A refusal: the queue is Carafe's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the queue {queue} is reserved for Carafe itself: {reason}")]
pub struct ReservedQueue {
    pub queue: String,
    pub reason: String,
}

/// The scope of the capability whose work a reserved queue carries.
fn capability_scope(queue: &QueueName) -> Option<Scope> {
    let rest = queue.as_str().strip_prefix(QueueName::RESERVED_PREFIX)?;
    match rest.split('.').next()? {
        "files" => Some(Scope::Files),
        "mail" => Some(Scope::Mail),
        "notify" => Some(Scope::Notify),
        _ => None,
    }
}

/// Whether `caller` may do `action` on `queue` (or on one of its jobs). Queues that are not
/// reserved are left to the route's usual scope checks.
pub fn check(caller: Caller, queue: &QueueName, action: QueueAction) -> Result<(), ReservedQueue> {
    if !queue.is_reserved() {
        return Ok(());
    }
    let allowed = match action {
        QueueAction::Read => match caller {
            Caller::Admin => true,
            Caller::Key(scopes) => {
                capability_scope(queue).is_some_and(|s| scopes.contains_exactly(s))
            }
            Caller::User => false,
        },
        QueueAction::Pause | QueueAction::Retry => caller == Caller::Admin,
        QueueAction::Enqueue
        | QueueAction::Claim
        | QueueAction::Report
        | QueueAction::Cancel
        | QueueAction::Configure => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(refusal(caller, queue, action))
    }
}

/// Whether a report (heartbeat, progress, complete, fail) from `caller` may reach jobs of
/// reserved queues. Never over the API; stores check it in the same write as the report (see
/// `Completion::outside`), and answer `Fenced::Reserved` to those it refuses.
pub fn reports_reach_reserved(_caller: Caller) -> bool {
    false
}

/// The refusal `check` gives `caller` for `action` on the reserved `queue`.
pub fn refusal(caller: Caller, queue: &QueueName, action: QueueAction) -> ReservedQueue {
    let reason = match (caller, action) {
        (Caller::Admin, _) => format!(
            "only Carafe's own handlers {} it; admins may read, pause, resume and retry",
            action.verb()
        ),
        _ => format!("only admins may {} it", action.verb()),
    };
    ReservedQueue {
        queue: queue.as_str().to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::parse(name).unwrap()
    }

    const ALL: [QueueAction; 8] = [
        QueueAction::Read,
        QueueAction::Enqueue,
        QueueAction::Claim,
        QueueAction::Report,
        QueueAction::Cancel,
        QueueAction::Retry,
        QueueAction::Pause,
        QueueAction::Configure,
    ];

    #[test]
    fn ordinary_queues_are_left_to_scopes() {
        for action in ALL {
            assert!(check(Caller::User, &q("emails"), action).is_ok());
            assert!(check(Caller::Key(Scopes::empty()), &q("carafe"), action).is_ok());
        }
    }

    #[test]
    fn reserved_queues_are_run_only_by_carafe() {
        let files = q("carafe.files");
        let jobs_key = Caller::Key(Scopes::empty().with(Scope::Jobs));
        let files_key = Caller::Key(Scopes::empty().with(Scope::Jobs).with(Scope::Files));
        for action in ALL {
            assert!(check(jobs_key, &files, action).is_err(), "{action:?}");
            assert!(check(Caller::User, &files, action).is_err(), "{action:?}");
            let admin_may = matches!(
                action,
                QueueAction::Read | QueueAction::Pause | QueueAction::Retry
            );
            assert_eq!(
                check(Caller::Admin, &files, action).is_ok(),
                admin_may,
                "{action:?}"
            );
            assert_eq!(
                check(files_key, &files, action).is_ok(),
                action == QueueAction::Read,
                "{action:?}"
            );
        }
        // What stores check in the write agrees with the rule.
        for caller in [Caller::Admin, jobs_key, files_key, Caller::User] {
            assert_eq!(
                reports_reach_reserved(caller),
                check(caller, &files, QueueAction::Report).is_ok()
            );
        }
        // A capability's scope reads only its own queue; unknown reserved queues are admins'.
        let mail_key = Caller::Key(Scopes::empty().with(Scope::Mail));
        assert!(check(mail_key, &files, QueueAction::Read).is_err());
        assert!(check(mail_key, &q("carafe.mail"), QueueAction::Read).is_ok());
        assert!(check(files_key, &q("carafe.other"), QueueAction::Read).is_err());
        assert!(check(Caller::Admin, &q("carafe.other"), QueueAction::Read).is_ok());
    }

    #[test]
    fn admin_keys_are_admins() {
        assert_eq!(
            Caller::from_key_scopes(Scopes::empty().with(Scope::Admin)),
            Caller::Admin
        );
        let jobs = Scopes::empty().with(Scope::Jobs);
        assert_eq!(Caller::from_key_scopes(jobs), Caller::Key(jobs));
    }
}
