//! linedesk, the server: HTTP routes, the LINE webhook and client, storage on sled,
//! configuration and the command line. The actors live in the `linedesk-actors` crate.

/// Every binary linking the server (the CLI, tests, benches) allocates the way production does.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod agent_ws;
pub mod cli;
pub mod demo;
pub mod fake_line;
pub mod line;
pub mod loadgen;
pub mod metrics;
pub mod outbound;
pub mod routes;
pub mod settings;
pub mod signals;
pub mod startup;
pub mod storage;
pub mod telemetry;
