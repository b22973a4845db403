//! Integration tests: one test binary, one module per capability.

mod agents;
mod cli;
mod conversations;
mod helpers;
mod line_payloads;
mod line_schema;
mod loadgen;
mod openapi;
mod restart;
mod webhook;
