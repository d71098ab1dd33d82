//! The second cache tier: settled chunks in the redis that replicas share, so that N replicas make one
//! upstream fetch per settled chunk, not N. A replica that misses locally reads redis before the
//! upstream, and writes what it fetched. Only settled chunks go there: they no longer change, so no
//! replica can read one that another has since refreshed. Open-period chunks stay local.
//!
//! Keyed by the chunk's fingerprint and the stored format, so a rolling upgrade that changes either
//! only misses. Redis trouble costs at most the link's timeout, then the upstream is asked as if the
//! tier were not there.

use super::cache::{CachedChunk, ChunkKey};
use crate::{
    domain::{STORED_CHUNK_FORMAT, StoredChunk},
    metrics::{Metrics, SharedTierOutcome},
    redis_link::RedisLink,
};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use std::{sync::Arc, time::Duration};

pub struct SharedTier {
    link: Arc<RedisLink>,
    key_prefix: String,
    ttl: Duration,
    max_chunk_bytes: usize,
    metrics: Arc<Metrics>,
}

impl SharedTier {
    pub fn new(
        link: Arc<RedisLink>,
        key_prefix: &str,
        ttl: Duration,
        max_chunk_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        SharedTier {
            link,
            key_prefix: key_prefix.to_string(),
            ttl,
            max_chunk_bytes: usize::try_from(max_chunk_bytes).unwrap_or(usize::MAX),
            metrics,
        }
    }

    /// `{prefix}:chunk:{format}:{SHA-256 of the chunk key}`. The key's derived `Debug` spells every
    /// field of the account, period and upstream request, so equal keys give equal text in every
    /// replica of a build; a build that spells them otherwise only misses.
    fn key(&self, chunk: &ChunkKey) -> String {
        let fingerprint = Sha256::digest(format!("{chunk:?}").as_bytes());
        let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:chunk:{STORED_CHUNK_FORMAT}:{hex}", self.key_prefix)
    }

    /// The chunk another replica stored, if redis has one this build can read.
    pub async fn read(&self, chunk: &ChunkKey) -> Option<StoredChunk> {
        let key = self.key(chunk);
        let stored: Option<Vec<u8>> = match self
            .link
            .call(|mut redis| {
                let key = &key;
                async move { redis.get(key).await }
            })
            .await
        {
            Ok(stored) => stored,
            Err(error) => {
                tracing::debug!(%error, "shared chunk tier: read skipped");
                self.metrics.shared_tier(SharedTierOutcome::Unavailable);
                return None;
            }
        };
        let Some(bytes) = stored else {
            self.metrics.shared_tier(SharedTierOutcome::Miss);
            return None;
        };
        match StoredChunk::decode(&bytes) {
            Ok(stored) if stored.period == chunk.chunk.period => {
                self.metrics.shared_tier(SharedTierOutcome::Hit);
                Some(stored)
            }
            Ok(_) => {
                tracing::warn!("shared chunk tier: a stored chunk of another period, ignored");
                self.metrics.shared_tier(SharedTierOutcome::Unreadable);
                None
            }
            Err(error) => {
                tracing::warn!(%error, "shared chunk tier: an unreadable chunk, fetched instead");
                self.metrics.shared_tier(SharedTierOutcome::Unreadable);
                None
            }
        }
    }

    /// Stores a settled chunk this replica fetched, for the others.
    pub async fn write(&self, chunk: &ChunkKey, data: &CachedChunk) {
        let bytes = match StoredChunk::encode(
            data.period,
            data.fetched_at,
            &data.records,
            &data.warnings,
        ) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, "shared chunk tier: not stored");
                self.metrics.shared_tier(SharedTierOutcome::Unreadable);
                return;
            }
        };
        if bytes.len() > self.max_chunk_bytes {
            self.metrics.shared_tier(SharedTierOutcome::TooLarge);
            return;
        }
        let key = self.key(chunk);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let written: Result<(), _> = self
            .link
            .call(|mut redis| {
                let (key, bytes) = (&key, bytes.as_slice());
                async move { redis.pset_ex(key, bytes, ttl).await }
            })
            .await;
        match written {
            Ok(()) => self.metrics.shared_tier(SharedTierOutcome::Written),
            Err(error) => {
                tracing::debug!(%error, "shared chunk tier: write skipped");
                self.metrics.shared_tier(SharedTierOutcome::Unavailable);
            }
        }
    }
}
