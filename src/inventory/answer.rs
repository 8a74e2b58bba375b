//! What applying a command answers: a business outcome, or a typed error per
//! operation. The gRPC layer maps outcomes to response fields and errors to
//! status codes; nothing here knows about either.

use thiserror::Error;

use super::stock::StockLevel;

/// The business result of a reservation call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The reservation holds its stock.
    Reserved,
    /// Nothing was reserved for lack of stock.
    InsufficientStock,
    /// The reservation's stock was consumed (the API's COMMITTED).
    Consumed,
    Released,
    Expired,
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub node: String,
    pub requested: i64,
    pub available: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveAnswer {
    /// Reserved, InsufficientStock, or for a repeated id the reservation's
    /// current state (Reserved, Consumed, Released, Expired).
    pub outcome: Outcome,
    /// Zero when nothing is reserved.
    pub expires_at_ms: u64,
    pub shortages: Vec<Shortage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendAnswer {
    /// Reserved (deadline moved), Expired or NotFound.
    pub outcome: Outcome,
    pub expires_at_ms: u64,
}

/// The answer of a stock change (sell, adjust, set on hand, set safety
/// stock): the counter's level right after it. A repeated transaction id
/// answers the level recorded by the first call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockAnswer {
    pub level: StockLevel,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReserveError {
    #[error("reservation {id:?} already exists with different lines or ttl; use a new id for a new reservation")]
    IdReused { id: String },
    #[error(
        "{open} reservations are open, the most the server holds; commit or release some first"
    )]
    TooManyOpen { open: usize },
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

/// The API's Commit of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsumeError {
    #[error(
        "reservation {id:?} was released; its stock is no longer held, so it cannot be committed"
    )]
    Released { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    #[error("reservation {id:?} was committed; its stock was consumed, so it cannot be released (use Adjust with reason RETURN_RESTOCK for returns)")]
    Consumed { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtendError {
    #[error("reservation {id:?} was committed; only an open reservation can be extended")]
    Consumed { id: String },
    #[error("reservation {id:?} was released; only an open reservation can be extended")]
    Released { id: String },
}

/// Limits of the state machine's tables (RESOURCE_EXHAUSTED).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CapacityError {
    #[error("the server holds {max} counters, its limit; no new (sku, node) can be added")]
    TooManyCounters { max: usize },
    #[error("sku {sku:?} is stocked at {max} nodes, the limit per sku")]
    TooManyNodes { sku: String, max: usize },
}

/// Errors shared by the transaction-id stock changes (sell, adjust, set on
/// hand).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StockChangeError {
    #[error(
        "txn_id {id:?} was already used for a different change; use a new id for a new change"
    )]
    IdReused { id: String },
    #[error(
        "on_hand of sku {sku:?} at node {node:?} would become {value}, outside -{max}..={max}"
    )]
    OutOfRange {
        sku: String,
        node: String,
        value: i128,
        max: i64,
    },
    #[error("on_hand of sku {sku:?} at node {node:?} is {actual}, not the expected {expected}; read it again and retry with a new txn_id")]
    Stale {
        sku: String,
        node: String,
        expected: i64,
        actual: i64,
    },
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

/// What one command answered, in the order of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Reserve(Result<ReserveAnswer, ReserveError>),
    Consume(Result<Outcome, ConsumeError>),
    Release(Result<Outcome, ReleaseError>),
    Extend(Result<ExtendAnswer, ExtendError>),
    /// Sell, Adjust and SetOnHand.
    StockChange(Result<StockAnswer, StockChangeError>),
    SetSafetyStock(Result<StockAnswer, CapacityError>),
}
