//! Commands: the validated changes a client can ask of the inventory.
//!
//! A command is built only through the constructors here, which check every
//! limit in [`crate::limits`]. Once built it is well-formed, so the state
//! machine only has to decide the business outcome (enough stock? id reused?),
//! never whether the input makes sense. Commands travel inside a [`Batch`],
//! the data of one Raft log entry.

use thiserror::Error;

use crate::limits::{
    COUNTER_MAX, ID_BYTES_MAX, LINES_PER_RESERVATION_MAX, NAME_BYTES_MAX, QTY_MAX, TTL_MS_MAX,
};

/// Input that can never be applied, whatever the state. Maps to
/// INVALID_ARGUMENT; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidInput {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    #[error("ttl_ms is {ttl_ms}; the limit is {max} ms")]
    TtlTooLong { ttl_ms: u64, max: u64 },
    #[error("a reservation needs at least one line")]
    NoLines,
    #[error("{count} lines; a reservation may have at most {max}")]
    TooManyLines { count: usize, max: usize },
    #[error("lines for sku {sku:?} at node {node:?} sum to more than {max}")]
    LineSumTooLarge { sku: String, node: String, max: i64 },
    #[error("{field} has unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("delta must not be 0")]
    ZeroDelta,
    #[error("reason {reason} needs a {sign} delta, got {delta}")]
    DeltaSignMismatch {
        reason: &'static str,
        sign: &'static str,
        delta: i64,
    },
    #[error("{count} {field} asked; at most {max} per call")]
    TooManyItems {
        field: &'static str,
        count: usize,
        max: usize,
    },
    #[error("the read would answer {rows} (sku, node) rows, more than {max}; ask for fewer SKUs, or name the nodes")]
    TooManyRows { rows: usize, max: usize },
    /// What was wrong with one line of a reservation: its index says which.
    #[error("lines[{index}]: {error}")]
    InLine {
        index: usize,
        error: Box<InvalidInput>,
    },
}

/// One line of a reservation after validation. In a [`Reserve`] command the
/// lines are summed per (sku, node) and sorted, so two requests that ask for
/// the same stock in a different order are the same payload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Line {
    pub sku: String,
    pub node: String,
    pub qty: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    pub reservation_id: String,
    pub lines: Vec<Line>,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    pub reservation_id: String,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sell {
    pub txn_id: String,
    pub sku: String,
    pub node: String,
    pub qty: i64,
}

/// Why on_hand changes in an [`Adjust`]. The sign of the delta must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdjustReason {
    Receive,
    ReturnRestock,
    Damage,
    Shrink,
    Correction,
}

impl AdjustReason {
    /// The wire value (matches `stockraft.v1.AdjustReason`).
    pub fn code(self) -> i32 {
        match self {
            AdjustReason::Receive => 1,
            AdjustReason::ReturnRestock => 2,
            AdjustReason::Damage => 3,
            AdjustReason::Shrink => 4,
            AdjustReason::Correction => 5,
        }
    }

    /// Parses the wire value; 0 (unspecified) and unknown values are refused.
    pub(crate) fn from_code(code: i32) -> Result<AdjustReason, InvalidInput> {
        match code {
            1 => Ok(AdjustReason::Receive),
            2 => Ok(AdjustReason::ReturnRestock),
            3 => Ok(AdjustReason::Damage),
            4 => Ok(AdjustReason::Shrink),
            5 => Ok(AdjustReason::Correction),
            value => Err(InvalidInput::UnknownEnum {
                field: "reason",
                value,
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AdjustReason::Receive => "RECEIVE",
            AdjustReason::ReturnRestock => "RETURN_RESTOCK",
            AdjustReason::Damage => "DAMAGE",
            AdjustReason::Shrink => "SHRINK",
            AdjustReason::Correction => "CORRECTION",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjust {
    pub txn_id: String,
    pub sku: String,
    pub node: String,
    pub delta: i64,
    pub reason: AdjustReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOnHand {
    pub txn_id: String,
    pub sku: String,
    pub node: String,
    pub on_hand: i64,
    pub expected_on_hand: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSafetyStock {
    pub sku: String,
    pub node: String,
    pub safety_stock: i64,
}

/// A change to the inventory, as carried in the replicated log.
///
/// `Consume` is the API's "Commit" of a reservation: its stock leaves
/// on_hand. Inside stockraft "commit" means a Raft entry that a quorum has
/// stored, so the reservation's commit is called consume here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Reserve(Reserve),
    Consume { reservation_id: String },
    Release { reservation_id: String },
    Extend(Extend),
    Sell(Sell),
    Adjust(Adjust),
    SetOnHand(SetOnHand),
    SetSafetyStock(SetSafetyStock),
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Reserve(_) => "reserve",
            Command::Consume { .. } => "commit",
            Command::Release { .. } => "release",
            Command::Extend(_) => "extend",
            Command::Sell(_) => "sell",
            Command::Adjust(_) => "adjust",
            Command::SetOnHand(_) => "set_on_hand",
            Command::SetSafetyStock(_) => "set_safety_stock",
        }
    }
}

/// The data of one Raft log entry: commands proposed together, with the
/// leader's clock and the id-retention settings in force, so that every
/// replica applies them identically without reading a clock or a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub stamp_ms: u64,
    pub id_retention_ms: u64,
    pub id_retained_max: u64,
    pub commands: Vec<Command>,
}

/// Checks a reservation id or transaction id.
pub fn check_id(field: &'static str, id: &str) -> Result<(), InvalidInput> {
    check_bytes(field, id, ID_BYTES_MAX)
}

/// Checks a SKU or node name.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), InvalidInput> {
    check_bytes(field, name, NAME_BYTES_MAX)
}

fn check_bytes(field: &'static str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::Empty { field });
    }
    if value.len() > max {
        return Err(InvalidInput::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

fn check_range(field: &'static str, value: i64, min: i64, max: i64) -> Result<(), InvalidInput> {
    if value < min || value > max {
        return Err(InvalidInput::OutOfRange {
            field,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Resolves a requested TTL: 0 means `ttl_ms_default`; anything above
/// `ttl_ms_max` (itself capped at [`TTL_MS_MAX`]) is refused.
pub(crate) fn resolve_ttl(
    ttl_ms: u64,
    ttl_ms_default: u64,
    ttl_ms_max: u64,
) -> Result<u64, InvalidInput> {
    let max = ttl_ms_max.min(TTL_MS_MAX);
    let ttl = if ttl_ms == 0 { ttl_ms_default } else { ttl_ms };
    if ttl > max {
        return Err(InvalidInput::TtlTooLong { ttl_ms: ttl, max });
    }
    Ok(ttl)
}

fn check_line(line: &Line) -> Result<(), InvalidInput> {
    check_name("sku", &line.sku)?;
    check_name("node", &line.node)?;
    check_range("qty", line.qty, 1, QTY_MAX)
}

impl Reserve {
    /// Validates a reserve and normalises its lines: quantities of lines that
    /// name the same (sku, node) are summed (bundles), and lines are sorted.
    pub fn new(
        reservation_id: String,
        lines: Vec<Line>,
        ttl_ms: u64,
    ) -> Result<Reserve, InvalidInput> {
        check_id("reservation_id", &reservation_id)?;
        if lines.is_empty() {
            return Err(InvalidInput::NoLines);
        }
        if lines.len() > LINES_PER_RESERVATION_MAX {
            return Err(InvalidInput::TooManyLines {
                count: lines.len(),
                max: LINES_PER_RESERVATION_MAX,
            });
        }
        if ttl_ms == 0 || ttl_ms > TTL_MS_MAX {
            return Err(InvalidInput::TtlTooLong {
                ttl_ms,
                max: TTL_MS_MAX,
            });
        }
        for (index, line) in lines.iter().enumerate() {
            check_line(line).map_err(|error| InvalidInput::InLine {
                index,
                error: Box::new(error),
            })?;
        }
        let mut sorted = lines;
        sorted.sort();
        let mut merged: Vec<Line> = Vec::with_capacity(sorted.len());
        for line in sorted {
            match merged.last_mut() {
                Some(last) if last.sku == line.sku && last.node == line.node => {
                    // At most LINES_PER_RESERVATION_MAX * QTY_MAX: no overflow.
                    last.qty += line.qty;
                    if last.qty > COUNTER_MAX {
                        return Err(InvalidInput::LineSumTooLarge {
                            sku: line.sku,
                            node: line.node,
                            max: COUNTER_MAX,
                        });
                    }
                }
                _ => merged.push(line),
            }
        }
        Ok(Reserve {
            reservation_id,
            lines: merged,
            ttl_ms,
        })
    }
}

impl Extend {
    pub fn new(reservation_id: String, ttl_ms: u64) -> Result<Extend, InvalidInput> {
        check_id("reservation_id", &reservation_id)?;
        if ttl_ms == 0 || ttl_ms > TTL_MS_MAX {
            return Err(InvalidInput::TtlTooLong {
                ttl_ms,
                max: TTL_MS_MAX,
            });
        }
        Ok(Extend {
            reservation_id,
            ttl_ms,
        })
    }
}

impl Sell {
    pub fn new(txn_id: String, sku: String, node: String, qty: i64) -> Result<Sell, InvalidInput> {
        check_id("txn_id", &txn_id)?;
        check_name("sku", &sku)?;
        check_name("node", &node)?;
        check_range("qty", qty, 1, QTY_MAX)?;
        Ok(Sell {
            txn_id,
            sku,
            node,
            qty,
        })
    }
}

impl Adjust {
    pub fn new(
        txn_id: String,
        sku: String,
        node: String,
        delta: i64,
        reason: AdjustReason,
    ) -> Result<Adjust, InvalidInput> {
        check_id("txn_id", &txn_id)?;
        check_name("sku", &sku)?;
        check_name("node", &node)?;
        if delta == 0 {
            return Err(InvalidInput::ZeroDelta);
        }
        check_range("delta", delta, -QTY_MAX, QTY_MAX)?;
        let sign_ok = match reason {
            AdjustReason::Receive | AdjustReason::ReturnRestock => delta > 0,
            AdjustReason::Damage | AdjustReason::Shrink => delta < 0,
            AdjustReason::Correction => true,
        };
        if !sign_ok {
            let sign = if delta > 0 { "negative" } else { "positive" };
            return Err(InvalidInput::DeltaSignMismatch {
                reason: reason.name(),
                sign,
                delta,
            });
        }
        Ok(Adjust {
            txn_id,
            sku,
            node,
            delta,
            reason,
        })
    }
}

impl SetOnHand {
    pub fn new(
        txn_id: String,
        sku: String,
        node: String,
        on_hand: i64,
        expected_on_hand: Option<i64>,
    ) -> Result<SetOnHand, InvalidInput> {
        check_id("txn_id", &txn_id)?;
        check_name("sku", &sku)?;
        check_name("node", &node)?;
        check_range("on_hand", on_hand, 0, COUNTER_MAX)?;
        if let Some(expected) = expected_on_hand {
            // The current value may legitimately be negative after sales.
            check_range("expected_on_hand", expected, -COUNTER_MAX, COUNTER_MAX)?;
        }
        Ok(SetOnHand {
            txn_id,
            sku,
            node,
            on_hand,
            expected_on_hand,
        })
    }
}

impl SetSafetyStock {
    pub fn new(
        sku: String,
        node: String,
        safety_stock: i64,
    ) -> Result<SetSafetyStock, InvalidInput> {
        check_name("sku", &sku)?;
        check_name("node", &node)?;
        check_range("safety_stock", safety_stock, 0, COUNTER_MAX)?;
        Ok(SetSafetyStock {
            sku,
            node,
            safety_stock,
        })
    }
}

/// Validates the id of a commit, release or reservation read.
pub(crate) fn reservation_ref(reservation_id: String) -> Result<String, InvalidInput> {
    check_id("reservation_id", &reservation_id)?;
    Ok(reservation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, node: &str, qty: i64) -> Line {
        Line {
            sku: sku.into(),
            node: node.into(),
            qty,
        }
    }

    #[test]
    fn reserve_sums_and_sorts_lines_of_the_same_counter() {
        let reserve = Reserve::new(
            "o1".into(),
            vec![line("b", "n1", 2), line("a", "n1", 1), line("b", "n1", 3)],
            1_000,
        )
        .unwrap();
        assert_eq!(reserve.lines, vec![line("a", "n1", 1), line("b", "n1", 5)]);
    }

    /// The error of line `index`, which must be where the error was found.
    fn in_line(index: usize, error: InvalidInput) -> InvalidInput {
        match error {
            InvalidInput::InLine { index: at, error } if at == index => *error,
            other => panic!("expected an error in lines[{index}], got {other:?}"),
        }
    }

    #[test]
    fn reserve_refuses_bad_input() {
        let ok = vec![line("a", "n", 1)];
        assert_eq!(
            Reserve::new("".into(), ok.clone(), 1).unwrap_err(),
            InvalidInput::Empty {
                field: "reservation_id"
            }
        );
        assert!(matches!(
            Reserve::new("x".repeat(129), ok.clone(), 1).unwrap_err(),
            InvalidInput::TooLong { len: 129, .. }
        ));
        assert_eq!(
            Reserve::new("o".into(), vec![], 1).unwrap_err(),
            InvalidInput::NoLines
        );
        assert!(matches!(
            in_line(
                0,
                Reserve::new("o".into(), vec![line("a", "n", 0)], 1).unwrap_err()
            ),
            InvalidInput::OutOfRange { field: "qty", .. }
        ));
        let second_bad = vec![line("a", "n", 1), line("b", "n", -5)];
        assert!(matches!(
            in_line(1, Reserve::new("o".into(), second_bad, 1).unwrap_err()),
            InvalidInput::OutOfRange { field: "qty", .. }
        ));
        assert!(matches!(
            in_line(
                0,
                Reserve::new("o".into(), vec![line("", "n", 1)], 1).unwrap_err()
            ),
            InvalidInput::Empty { field: "sku" }
        ));
        let many = vec![line("a", "n", 1); 1_001];
        assert!(matches!(
            Reserve::new("o".into(), many, 1).unwrap_err(),
            InvalidInput::TooManyLines { count: 1_001, .. }
        ));
        assert!(matches!(
            Reserve::new("o".into(), ok, TTL_MS_MAX + 1).unwrap_err(),
            InvalidInput::TtlTooLong { .. }
        ));
    }

    #[test]
    fn the_largest_bundle_sums_exactly_within_the_counter_range() {
        // 1,000 lines of the largest quantity: the sum is exact, not wrapped,
        // and still within a counter's range.
        let lines = vec![line("a", "n", QTY_MAX); LINES_PER_RESERVATION_MAX];
        let reserve = Reserve::new("o".into(), lines, 1).unwrap();
        assert_eq!(reserve.lines.len(), 1);
        assert_eq!(
            reserve.lines[0].qty,
            QTY_MAX * LINES_PER_RESERVATION_MAX as i64
        );
        assert!(reserve.lines[0].qty <= COUNTER_MAX);
    }

    #[test]
    fn adjust_sign_must_match_reason() {
        let make = |delta, reason| Adjust::new("t".into(), "s".into(), "n".into(), delta, reason);
        assert!(make(5, AdjustReason::Receive).is_ok());
        assert!(make(-5, AdjustReason::Receive).is_err());
        assert!(make(-5, AdjustReason::Damage).is_ok());
        assert!(make(5, AdjustReason::Shrink).is_err());
        assert!(make(5, AdjustReason::Correction).is_ok());
        assert!(make(-5, AdjustReason::Correction).is_ok());
        assert_eq!(
            make(0, AdjustReason::Correction).unwrap_err(),
            InvalidInput::ZeroDelta
        );
        assert!(AdjustReason::from_code(0).is_err());
        assert!(AdjustReason::from_code(9).is_err());
    }

    #[test]
    fn ttl_resolution() {
        assert_eq!(resolve_ttl(0, 900, 10_000), Ok(900));
        assert_eq!(resolve_ttl(5, 900, 10_000), Ok(5));
        assert!(resolve_ttl(10_001, 900, 10_000).is_err());
        assert!(resolve_ttl(TTL_MS_MAX + 1, 900, u64::MAX).is_err());
    }

    #[test]
    fn set_on_hand_refuses_negative_counts() {
        assert!(SetOnHand::new("t".into(), "s".into(), "n".into(), -1, None).is_err());
        assert!(SetOnHand::new("t".into(), "s".into(), "n".into(), 0, Some(-3)).is_ok());
    }
}
