//! Tests of the Elastic emulator over HTTP: the seeded usage, v1 and v2 answers, every failure.

mod errors;
mod kit;
mod scale;
mod v1;
mod v2;
