//! The `SKU@NODE:NUMBER` notation of the client commands' arguments.

use thiserror::Error;

/// A parsed `SKU@NODE:NUMBER` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CounterArg {
    pub sku: String,
    pub node: String,
    pub number: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not SKU@NODE:NUMBER (for example SKU-1@store-7:2)")]
pub(super) struct CounterArgError(String);

/// Parses `SKU@NODE:NUMBER`. The SKU is everything before the last `@`, the
/// node everything between it and the last `:`, so SKUs may contain `@`.
pub(super) fn parse_counter_arg(text: &str) -> Result<CounterArg, CounterArgError> {
    let bad = || CounterArgError(text.to_string());
    let (counter, number) = text.rsplit_once(':').ok_or_else(bad)?;
    let (sku, node) = counter.rsplit_once('@').ok_or_else(bad)?;
    if sku.is_empty() || node.is_empty() {
        return Err(bad());
    }
    let number: i64 = number.trim().parse().map_err(|_| bad())?;
    Ok(CounterArg {
        sku: sku.to_string(),
        node: node.to_string(),
        number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_args_parse() {
        assert_eq!(
            parse_counter_arg("SKU-1@store-7:2").unwrap(),
            CounterArg {
                sku: "SKU-1".into(),
                node: "store-7".into(),
                number: 2
            }
        );
        assert_eq!(parse_counter_arg("a@b@dc:-3").unwrap().sku, "a@b");
        assert!(parse_counter_arg("nosep").is_err());
        assert!(parse_counter_arg("@n:1").is_err());
        assert!(parse_counter_arg("s@n:x").is_err());
    }
}
