//! Tests of the Atlas emulator over HTTP: the create/poll flow, authentication, refusals and faults.

mod auth;
mod errors;
mod flow;
mod kit;
