//! Provider accounts: one module per upstream, the shared HTTP layer, and the one enum the engine calls.

pub mod error;
pub mod exact_json;
pub mod http;
pub mod team;

use crate::{
    config::{AccountKind, AccountSettings},
    deadline::Deadline,
    domain::{
        CostRecord, DataQualityWarning, Granularity, GroupBy, Period, ProviderAccountId,
        ProviderKind, Text,
    },
};
use error::UpstreamError;
use std::sync::Arc;

/// Who a provider account is, as every record and result names it.
#[derive(Debug, Clone)]
pub struct AccountRef {
    pub id: ProviderAccountId,
    pub kind: ProviderKind,
    pub display_name: Text,
}

/// What a provider account can answer.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub granularities: Vec<Granularity>,
    pub group_by: Vec<GroupBy>,
    pub asynchronous: bool,
    pub native_unit: &'static str,
}

/// The normalized answer for one chunk of a query.
#[derive(Debug)]
pub struct ChunkData {
    pub records: Vec<CostRecord>,
    pub warnings: Vec<DataQualityWarning>,
    /// HTTP requests sent for it, retries included.
    pub requests: u32,
    pub rate_limit_remaining: Option<i64>,
}

/// A chunk that could not be fetched.
#[derive(Debug)]
pub struct ChunkFailure {
    pub error: UpstreamError,
    pub requests: u32,
}

/// A configured provider account, ready to fetch.
pub enum Provider {
    TeamBilling(team::TeamBillingClient),
}

impl Provider {
    pub fn new(settings: &AccountSettings, http: Arc<http::UpstreamHttp>) -> Provider {
        let account = AccountRef {
            id: settings.id.clone(),
            kind: settings.provider(),
            display_name: Text::from(settings.display_name.as_str()),
        };
        match &settings.kind {
            AccountKind::TeamBilling {
                team_id,
                token,
                pricing_sheet_id,
            } => Provider::TeamBilling(team::TeamBillingClient::new(
                account,
                http,
                settings.base_url.clone(),
                team_id.clone(),
                token.clone(),
                pricing_sheet_id.clone(),
            )),
        }
    }

    pub fn account(&self) -> &AccountRef {
        match self {
            Provider::TeamBilling(client) => &client.account,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        match self {
            Provider::TeamBilling(_) => Capabilities {
                granularities: vec![Granularity::None, Granularity::Daily, Granularity::Monthly],
                group_by: vec![
                    GroupBy::Provider,
                    GroupBy::BillingAccount,
                    GroupBy::Service,
                    GroupBy::ChargeDimension,
                    GroupBy::ChargeCategory,
                ],
                asynchronous: false,
                native_unit: "nanodollar",
            },
        }
    }

    /// The upstream periods a query needs: one per UTC day for daily rows (the API sums whatever
    /// range it is given), one per calendar month otherwise.
    pub fn chunk_periods(&self, period: &Period, granularity: Granularity) -> Vec<Period> {
        match (self, granularity) {
            (Provider::TeamBilling(_), Granularity::Daily) => period.days(),
            (Provider::TeamBilling(_), Granularity::None | Granularity::Monthly) => period.months(),
        }
    }

    pub async fn fetch(
        &self,
        period: Period,
        deadline: Deadline,
    ) -> Result<ChunkData, ChunkFailure> {
        match self {
            Provider::TeamBilling(client) => client.fetch(period, deadline).await,
        }
    }
}
