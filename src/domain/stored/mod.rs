//! The stored form of a chunk, for the cache tier that replicas share: compact (every text once, in a
//! dictionary; integers as varints; decimals as mantissa and scale) and versioned, so a replica of
//! another build never misreads what it cannot read: it reads nothing, and fetches.
//!
//! Written from the records (not from the columns' private layout) and read back through
//! [`RecordColumns::from_records`], so what comes back is checked as any fetch is: every id, period,
//! currency and index is validated, and a malformed value is an error, never a panic.

use super::{
    ChargeCategory, CostRecord, Currency, DataQualityWarning, EXTENSION_NAMES, Money, Named,
    Period, ProviderAccountId, ProviderKind, Quantity, RecordColumns, Resource, Text, UnitPrice,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// The first bytes of every stored chunk: what it is, then its format.
const MAGIC: &[u8; 4] = b"cdck";
/// Bumped whenever the layout below changes; part of the stored key too.
pub const STORED_CHUNK_FORMAT: u8 = 1;

/// A chunk as the shared tier holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub period: Period,
    pub fetched_at: DateTime<Utc>,
    pub records: Vec<CostRecord>,
    pub warnings: Vec<DataQualityWarning>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredChunkError {
    #[error("not a stored chunk")]
    NotAChunk,
    #[error("stored chunk format {0}, this build reads {STORED_CHUNK_FORMAT}")]
    Format(u8),
    #[error("stored chunk is malformed: {0}")]
    Malformed(&'static str),
    #[error("extension {0} has no stored name")]
    UnknownExtension(&'static str),
}

impl StoredChunk {
    /// The stored bytes of `records` (a chunk's columns), its period, when it was fetched and its
    /// warnings.
    pub fn encode(
        period: Period,
        fetched_at: DateTime<Utc>,
        records: &RecordColumns,
        warnings: &[DataQualityWarning],
    ) -> Result<Vec<u8>, StoredChunkError> {
        let mut texts = Dictionary::default();
        let mut body = Vec::with_capacity(32 * records.len());
        let mut periods: Vec<Period> = Vec::new();
        let mut accounts: Vec<(ProviderKind, ProviderAccountId)> = Vec::new();
        put_varint(&mut body, records.len() as u128);
        for record in records.records() {
            let account = index_of(&mut accounts, (record.provider, record.provider_account));
            put_varint(&mut body, account as u128);
            put_text(&mut body, texts.id(&record.billing_account.id));
            put_optional(&mut body, record.billing_account.name.as_ref(), &mut texts);
            match &record.sub_account {
                Some(sub) => {
                    put_text(&mut body, texts.id(&sub.id));
                    put_optional(&mut body, sub.name.as_ref(), &mut texts);
                }
                None => put_varint(&mut body, 0),
            }
            match &record.resource {
                Some(resource) => {
                    put_text(&mut body, texts.id(&resource.id));
                    put_optional(&mut body, resource.name.as_ref(), &mut texts);
                    put_text(&mut body, texts.id(&resource.kind));
                }
                None => put_varint(&mut body, 0),
            }
            put_text(&mut body, texts.id(&record.service_name));
            put_optional(&mut body, record.sku_id.as_ref(), &mut texts);
            put_optional(&mut body, record.charge_dimension.as_ref(), &mut texts);
            body.push(category_code(record.charge_category));
            put_varint(
                &mut body,
                index_of(&mut periods, record.charge_period) as u128,
            );
            put_currency(&mut body, record.billed_cost.currency());
            put_signed(&mut body, record.billed_cost.nanos());
            put_decimal(&mut body, record.original_amount.value);
            put_text(&mut body, texts.id(&record.original_amount.unit));
            match &record.consumed_quantity {
                Some(quantity) => {
                    put_text(&mut body, texts.id(&quantity.unit));
                    put_decimal(&mut body, quantity.value);
                }
                None => put_varint(&mut body, 0),
            }
            match &record.list_unit_price {
                Some(price) => {
                    body.push(1);
                    put_decimal(&mut body, price.amount);
                    put_currency(&mut body, price.currency);
                }
                None => body.push(0),
            }
            put_optional(&mut body, record.invoice_id.as_ref(), &mut texts);
            put_varint(&mut body, record.extensions.len() as u128);
            for (name, value) in &record.extensions {
                let known = EXTENSION_NAMES
                    .iter()
                    .position(|known| known == name)
                    .ok_or(StoredChunkError::UnknownExtension(name))?;
                put_text(&mut body, known as u128);
                put_text(&mut body, texts.id(value));
            }
        }
        let mut out = Vec::with_capacity(body.len() + 64 * texts.texts.len() + 64);
        out.extend_from_slice(MAGIC);
        out.push(STORED_CHUNK_FORMAT);
        put_period(&mut out, period);
        put_instant(&mut out, fetched_at);
        put_varint(&mut out, texts.texts.len() as u128);
        for text in &texts.texts {
            put_bytes(&mut out, text.as_bytes());
        }
        put_varint(&mut out, periods.len() as u128);
        for period in &periods {
            put_period(&mut out, *period);
        }
        put_varint(&mut out, accounts.len() as u128);
        for (kind, id) in &accounts {
            out.push(kind_code(*kind));
            put_bytes(&mut out, id.as_str().as_bytes());
        }
        // Warnings are rare and short; serde's JSON keeps their codes readable.
        put_bytes(
            &mut out,
            &serde_json::to_vec(warnings).unwrap_or_else(|_| b"[]".to_vec()),
        );
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredChunk, StoredChunkError> {
        let mut input = Reader { bytes };
        if input.take(MAGIC.len()).ok() != Some(MAGIC.as_slice()) {
            return Err(StoredChunkError::NotAChunk);
        }
        let format = input.byte()?;
        if format != STORED_CHUNK_FORMAT {
            return Err(StoredChunkError::Format(format));
        }
        let period = input.period()?;
        let fetched_at = input.instant()?;
        let texts = (0..input.count()?)
            .map(|_| {
                let text = std::str::from_utf8(input.bytes()?)
                    .map_err(|_| StoredChunkError::Malformed("a text is not UTF-8"))?;
                Ok(Text::from(text))
            })
            .collect::<Result<Vec<_>, StoredChunkError>>()?;
        let periods = (0..input.count()?)
            .map(|_| input.period())
            .collect::<Result<Vec<_>, _>>()?;
        let accounts = (0..input.count()?)
            .map(|_| {
                let kind = kind_of(input.byte()?)?;
                let id = std::str::from_utf8(input.bytes()?)
                    .ok()
                    .and_then(|id| ProviderAccountId::parse(id).ok())
                    .ok_or(StoredChunkError::Malformed("an account id"))?;
                Ok((kind, id))
            })
            .collect::<Result<Vec<_>, StoredChunkError>>()?;
        let warnings: Vec<DataQualityWarning> = serde_json::from_slice(input.bytes()?)
            .map_err(|_| StoredChunkError::Malformed("the warnings"))?;
        let text = |id: u128| -> Result<Text, StoredChunkError> {
            usize::try_from(id)
                .ok()
                .and_then(|id| texts.get(id))
                .cloned()
                .ok_or(StoredChunkError::Malformed("a text index"))
        };
        let optional = |input: &mut Reader| -> Result<Option<Text>, StoredChunkError> {
            match input.varint()? {
                0 => Ok(None),
                id => text(id - 1).map(Some),
            }
        };
        let required = |input: &mut Reader| -> Result<Text, StoredChunkError> {
            optional(input)?.ok_or(StoredChunkError::Malformed("a missing text"))
        };
        let count = input.count()?;
        let mut records = Vec::with_capacity(count);
        for _ in 0..count {
            let (provider, provider_account) = usize::try_from(input.varint()?)
                .ok()
                .and_then(|at| accounts.get(at))
                .cloned()
                .ok_or(StoredChunkError::Malformed("an account index"))?;
            let billing_account = Named {
                id: required(&mut input)?,
                name: optional(&mut input)?,
            };
            let sub_account = match optional(&mut input)? {
                Some(id) => Some(Named {
                    id,
                    name: optional(&mut input)?,
                }),
                None => None,
            };
            let resource = match optional(&mut input)? {
                Some(id) => Some(Resource {
                    id,
                    name: optional(&mut input)?,
                    kind: required(&mut input)?,
                }),
                None => None,
            };
            let service_name = required(&mut input)?;
            let sku_id = optional(&mut input)?;
            let charge_dimension = optional(&mut input)?;
            let charge_category = ChargeCategory::ALL
                .get(usize::from(input.byte()?))
                .copied()
                .ok_or(StoredChunkError::Malformed("a charge category"))?;
            let charge_period = usize::try_from(input.varint()?)
                .ok()
                .and_then(|at| periods.get(at))
                .copied()
                .ok_or(StoredChunkError::Malformed("a period index"))?;
            let billed_cost = Money::from_nanos(input.currency()?, input.signed()?);
            let original_amount = {
                let value = input.decimal()?;
                Quantity {
                    value,
                    unit: required(&mut input)?,
                }
            };
            let consumed_quantity = match optional(&mut input)? {
                Some(unit) => Some(Quantity {
                    value: input.decimal()?,
                    unit,
                }),
                None => None,
            };
            let list_unit_price = match input.byte()? {
                0 => None,
                1 => Some(UnitPrice {
                    amount: input.decimal()?,
                    currency: input.currency()?,
                }),
                _ => return Err(StoredChunkError::Malformed("a price flag")),
            };
            let invoice_id = optional(&mut input)?;
            let mut extensions = std::collections::BTreeMap::new();
            for _ in 0..input.count()? {
                let name = usize::try_from(input.varint()?)
                    .ok()
                    .and_then(|at| at.checked_sub(1))
                    .and_then(|at| EXTENSION_NAMES.get(at))
                    .ok_or(StoredChunkError::Malformed("an extension name"))?;
                extensions.insert(*name, required(&mut input)?);
            }
            records.push(CostRecord {
                provider,
                provider_account,
                billing_account,
                sub_account,
                resource,
                service_name,
                sku_id,
                charge_dimension,
                charge_category,
                charge_period,
                billed_cost,
                original_amount,
                consumed_quantity,
                list_unit_price,
                invoice_id,
                extensions,
            });
        }
        if !input.bytes.is_empty() {
            return Err(StoredChunkError::Malformed("bytes after the last record"));
        }
        Ok(StoredChunk {
            period,
            fetched_at,
            records,
            warnings,
        })
    }
}

/// The chunk's texts, each once, in order of first use.
#[derive(Default)]
struct Dictionary {
    texts: Vec<Text>,
    ids: HashMap<Text, u128>,
}

impl Dictionary {
    fn id(&mut self, text: &Text) -> u128 {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = self.texts.len() as u128;
        self.texts.push(text.clone());
        self.ids.insert(text.clone(), id);
        id
    }
}

fn index_of<T: PartialEq>(values: &mut Vec<T>, value: T) -> usize {
    match values.iter().position(|known| *known == value) {
        Some(at) => at,
        None => {
            values.push(value);
            values.len() - 1
        }
    }
}

fn category_code(category: ChargeCategory) -> u8 {
    ChargeCategory::ALL
        .iter()
        .position(|known| *known == category)
        .map_or(u8::MAX, |at| at as u8)
}

fn kind_code(kind: ProviderKind) -> u8 {
    ProviderKind::ALL
        .iter()
        .position(|known| *known == kind)
        .map_or(u8::MAX, |at| at as u8)
}

fn kind_of(code: u8) -> Result<ProviderKind, StoredChunkError> {
    ProviderKind::ALL
        .get(usize::from(code))
        .copied()
        .ok_or(StoredChunkError::Malformed("a provider kind"))
}

/// LEB128: seven bits a byte, low first.
fn put_varint(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Zigzag, so small negative amounts (credits) stay short.
fn put_signed(out: &mut Vec<u8>, value: i128) {
    put_varint(out, ((value << 1) ^ (value >> 127)) as u128);
}

/// A present text's id, shifted by one: 0 says "absent".
fn put_text(out: &mut Vec<u8>, id: u128) {
    put_varint(out, id + 1);
}

fn put_optional(out: &mut Vec<u8>, text: Option<&Text>, texts: &mut Dictionary) {
    match text {
        Some(text) => put_text(out, texts.id(text)),
        None => put_varint(out, 0),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u128);
    out.extend_from_slice(bytes);
}

fn put_decimal(out: &mut Vec<u8>, value: Decimal) {
    put_signed(out, value.mantissa());
    out.push(value.scale() as u8);
}

fn put_currency(out: &mut Vec<u8>, currency: Currency) {
    out.extend_from_slice(currency.as_str().as_bytes());
}

fn put_instant(out: &mut Vec<u8>, at: DateTime<Utc>) {
    put_signed(out, i128::from(at.timestamp()));
    put_varint(out, u128::from(at.timestamp_subsec_nanos()));
}

fn put_period(out: &mut Vec<u8>, period: Period) {
    put_instant(out, period.start());
    put_instant(out, period.end());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoredChunkError> {
        if self.bytes.len() < n {
            return Err(StoredChunkError::Malformed("cut short"));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, StoredChunkError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u128, StoredChunkError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.byte()?;
            value |= u128::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or(StoredChunkError::Malformed("a varint"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(StoredChunkError::Malformed("a varint"))
    }

    /// A count of things each at least a byte long: never more than the bytes left, so a corrupt
    /// count cannot ask for a huge allocation.
    fn count(&mut self) -> Result<usize, StoredChunkError> {
        usize::try_from(self.varint()?)
            .ok()
            .filter(|count| *count <= self.bytes.len())
            .ok_or(StoredChunkError::Malformed("a count"))
    }

    fn signed(&mut self) -> Result<i128, StoredChunkError> {
        let zigzag = self.varint()?;
        Ok(((zigzag >> 1) as i128) ^ -((zigzag & 1) as i128))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoredChunkError> {
        let len = self.count()?;
        self.take(len)
    }

    fn decimal(&mut self) -> Result<Decimal, StoredChunkError> {
        let mantissa = self.signed()?;
        let scale = u32::from(self.byte()?);
        Decimal::try_from_i128_with_scale(mantissa, scale)
            .map_err(|_| StoredChunkError::Malformed("a decimal"))
    }

    fn currency(&mut self) -> Result<Currency, StoredChunkError> {
        std::str::from_utf8(self.take(3)?)
            .ok()
            .and_then(|code| Currency::parse(code).ok())
            .ok_or(StoredChunkError::Malformed("a currency"))
    }

    fn instant(&mut self) -> Result<DateTime<Utc>, StoredChunkError> {
        let seconds =
            i64::try_from(self.signed()?).map_err(|_| StoredChunkError::Malformed("an instant"))?;
        let nanos =
            u32::try_from(self.varint()?).map_err(|_| StoredChunkError::Malformed("an instant"))?;
        DateTime::from_timestamp(seconds, nanos).ok_or(StoredChunkError::Malformed("an instant"))
    }

    fn period(&mut self) -> Result<Period, StoredChunkError> {
        let start = self.instant()?;
        let end = self.instant()?;
        Period::new(start, end).map_err(|_| StoredChunkError::Malformed("a period"))
    }
}

#[cfg(test)]
mod tests;
