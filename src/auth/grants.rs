//! `[[auth.grants]]`: which principal sees which provider accounts and whose jobs. Deny by default: a
//! principal no grant matches sees nothing; the first grant that matches is the caller's.

use super::Principal;
use crate::config::{GrantConfig, JobVisibility};
use std::sync::Arc;

/// One grant, its globs compiled.
#[derive(Debug)]
pub struct Grant {
    /// Position in the file: callers with the same grant see the same accounts.
    pub index: usize,
    principal: glob::Pattern,
    accounts: Vec<glob::Pattern>,
    pub jobs: JobVisibility,
}

impl Grant {
    pub fn covers_account(&self, account: &str) -> bool {
        self.accounts.iter().any(|glob| glob.matches(account))
    }
}

pub struct Grants(Vec<Arc<Grant>>);

impl Grants {
    /// Globs were checked when the configuration was loaded; a grant whose glob still fails is
    /// left out (denied), never widened.
    pub fn new(grants: &[GrantConfig]) -> Self {
        Grants(
            grants
                .iter()
                .enumerate()
                .filter_map(|(index, grant)| {
                    Some(Arc::new(Grant {
                        index,
                        principal: glob::Pattern::new(&grant.principal).ok()?,
                        accounts: grant
                            .accounts
                            .iter()
                            .filter_map(|glob| glob::Pattern::new(glob).ok())
                            .collect(),
                        jobs: grant.jobs,
                    }))
                })
                .collect(),
        )
    }

    /// The caller with its grant, or the principal back when no grant matches.
    pub fn caller(&self, principal: Principal) -> Result<Caller, Principal> {
        match self
            .0
            .iter()
            .find(|grant| grant.principal.matches(principal.as_str()))
        {
            Some(grant) => Ok(Caller {
                principal,
                grant: grant.clone(),
            }),
            None => Err(principal),
        }
    }
}

/// An authenticated, granted caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub grant: Arc<Grant>,
}

/// What a call may see, carried in its request extensions: everything (no `[auth]`), or a caller's
/// grant. A call without one is refused, so forgetting to attach it denies rather than opens.
#[derive(Debug, Clone)]
pub enum Access {
    Open,
    Granted(Caller),
}

impl Access {
    pub fn covers_account(&self, account: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Granted(caller) => caller.grant.covers_account(account),
        }
    }

    /// Who owns the jobs this caller starts (nobody when open: everyone sees them, as before auth).
    pub fn owner(&self) -> Option<String> {
        self.principal()
            .map(|principal| principal.as_str().to_string())
    }

    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Open => None,
            Access::Granted(caller) => Some(&caller.principal),
        }
    }

    /// Whether a job owned by `owner` exists for this caller.
    pub fn sees_job_of(&self, owner: Option<&str>) -> bool {
        match self {
            Access::Open => true,
            Access::Granted(caller) => {
                caller.grant.jobs == JobVisibility::All || owner == Some(caller.principal.as_str())
            }
        }
    }

    /// Callers with equal scopes see the same accounts, so they may share remembered answers.
    pub fn scope(&self) -> Option<usize> {
        match self {
            Access::Open => None,
            Access::Granted(caller) => Some(caller.grant.index),
        }
    }
}
