//! Integration tests: one test binary, one module per capability.

mod agents;
mod cli;
mod conversations;
mod fake_line;
mod helpers;
mod line_payloads;
mod line_schema;
mod loadgen;
mod outbound;
mod restart;
mod routing_rules;
mod webhook;
