//! The team billing API (`GET /teams/{teamId}/billing/cost`): exact costs in nanodollars.

mod client;
mod normalize;
mod wire;

pub use client::TeamBillingClient;
pub use normalize::normalize;
pub use wire::CostResponse;
