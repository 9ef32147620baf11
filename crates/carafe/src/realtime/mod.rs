//! Live updates. The bus carries wake-up hints between the parts of Carafe (and, on
//! PostgreSQL, between instances); the durable record of what happened is always in the
//! database, which every waiter re-reads after a wake-up or a poll interval.

pub mod bus;
