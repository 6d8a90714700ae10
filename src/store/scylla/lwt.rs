//! Answers of lightweight transactions, and rows read by column name.
//!
//! A conditional write answers with one row whose first column is `[applied]`. When the
//! condition failed, the row also carries columns of the existing row — Scylla sends every
//! column of it, Cassandra only those the condition names, and neither promises an order.
//! So `[applied]` and everything else are looked up **by name**, never by position, and a
//! missing `[applied]` is an error: a server that does not say whether the write applied
//! (as the in-memory test server did before otpd's copy of it, in `vendor/kassandra`, learnt
//! `IF NOT EXISTS` and `IF EXISTS`) must not be taken as "applied".

use std::net::IpAddr;

use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};
use uuid::Uuid;

/// Untyped rows: each a value (or null) per column.
pub type RawRows = Vec<Vec<Option<CqlValue>>>;

/// Named column values of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns(pub Vec<(String, Option<CqlValue>)>);

/// What a conditional write answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LwtAnswer {
    pub applied: bool,
    /// The existing row's columns when not applied (possibly none), `[applied]` excluded.
    pub existing: Columns,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LwtError {
    #[error("the conditional write was answered without rows, so without [applied]")]
    NoRows,
    #[error("the conditional write was answered with {0} rows, expected 1")]
    RowCount(usize),
    #[error("the conditional write's answer has no [applied] column")]
    NoApplied,
    #[error("[applied] is not a boolean")]
    NotBoolean,
    #[error("{0}")]
    Decode(String),
}

/// Parses one LWT answer row given its column names.
pub fn parse(names: &[String], rows: RawRows) -> Result<LwtAnswer, LwtError> {
    if rows.len() != 1 {
        return Err(if rows.is_empty() { LwtError::NoRows } else { LwtError::RowCount(rows.len()) });
    }
    let row = rows.into_iter().next().expect("one row, checked above");
    let mut applied = None;
    let mut existing = Vec::with_capacity(row.len());
    for (name, value) in names.iter().zip(row) {
        if name == "[applied]" {
            applied = Some(match value {
                Some(CqlValue::Boolean(b)) => b,
                _ => return Err(LwtError::NotBoolean),
            });
        } else {
            existing.push((name.clone(), value));
        }
    }
    let applied = applied.ok_or(LwtError::NoApplied)?;
    Ok(LwtAnswer { applied, existing: Columns(existing) })
}

/// Names and untyped values of every row of a result.
pub fn columns_of(result: QueryResult) -> Result<(Vec<String>, RawRows), LwtError> {
    if !result.is_rows() {
        return Ok((Vec::new(), Vec::new()));
    }
    let rows = result.into_rows_result().map_err(|e| LwtError::Decode(e.to_string()))?;
    let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_owned()).collect();
    let values = rows
        .rows::<Row>()
        .map_err(|e| LwtError::Decode(e.to_string()))?
        .map(|r| r.map(|row| row.columns))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LwtError::Decode(e.to_string()))?;
    Ok((names, values))
}

/// The answer of a conditional write as the driver returned it.
pub fn answer(result: QueryResult) -> Result<LwtAnswer, LwtError> {
    let (names, rows) = columns_of(result)?;
    parse(&names, rows)
}

/// Typed access to named columns; a wrong type is a decode error naming the column.
impl Columns {
    /// The rows of a result as named columns.
    pub fn rows_of(result: QueryResult) -> Result<Vec<Columns>, LwtError> {
        let (names, rows) = columns_of(result)?;
        Ok(rows.into_iter().map(|row| Columns(names.iter().cloned().zip(row).collect())).collect())
    }

    pub fn get(&self, name: &str) -> Option<&CqlValue> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|(_, v)| v.is_none())
    }

    fn typed<'a, T>(&'a self, name: &str, f: impl FnOnce(&'a CqlValue) -> Option<T>) -> Result<Option<T>, LwtError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => f(v).map(Some).ok_or_else(|| LwtError::Decode(format!("column {name} has an unexpected type"))),
        }
    }

    pub fn blob(&self, name: &str) -> Result<Option<&[u8]>, LwtError> {
        self.typed(name, |v| if let CqlValue::Blob(b) = v { Some(b.as_slice()) } else { None })
    }

    pub fn text(&self, name: &str) -> Result<Option<&str>, LwtError> {
        self.typed(name, |v| match v {
            CqlValue::Text(s) | CqlValue::Ascii(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn uuid(&self, name: &str) -> Result<Option<Uuid>, LwtError> {
        self.typed(name, |v| match v {
            CqlValue::Uuid(u) => Some(*u),
            CqlValue::Timeuuid(u) => Some(Uuid::from(*u)),
            _ => None,
        })
    }

    pub fn int(&self, name: &str) -> Result<Option<i32>, LwtError> {
        self.typed(name, |v| if let CqlValue::Int(i) = v { Some(*i) } else { None })
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, LwtError> {
        self.typed(name, |v| if let CqlValue::Boolean(b) = v { Some(*b) } else { None })
    }

    /// Milliseconds since the epoch.
    pub fn timestamp(&self, name: &str) -> Result<Option<i64>, LwtError> {
        self.typed(name, |v| if let CqlValue::Timestamp(t) = v { Some(t.0) } else { None })
    }

    pub fn inet(&self, name: &str) -> Result<Option<IpAddr>, LwtError> {
        self.typed(name, |v| if let CqlValue::Inet(ip) = v { Some(*ip) } else { None })
    }
}

#[cfg(test)]
mod tests {
    use scylla::value::CqlTimestamp;

    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_applied_insert_is_one_boolean_column() {
        let a = parse(&names(&["[applied]"]), vec![vec![Some(CqlValue::Boolean(true))]]).unwrap();
        assert!(a.applied);
        assert!(a.existing.0.is_empty());
    }

    #[test]
    fn a_failed_insert_carries_the_existing_row_in_any_order_as_scylla_sends_it() {
        // Scylla: `[applied]` first, then every column of the existing row (here in the
        // order Scylla lists them: partition key, then regular columns alphabetically).
        let id = Uuid::now_v7();
        let scylla = parse(
            &names(&["[applied]", "ident_hash", "country_code", "created_at", "email", "first_name", "user_id"]),
            vec![vec![
                Some(CqlValue::Boolean(false)),
                Some(CqlValue::Blob(vec![7; 16])),
                Some(CqlValue::Int(44)),
                Some(CqlValue::Timestamp(CqlTimestamp(1_700_000_000_000))),
                None,
                Some(CqlValue::Text("Ada".into())),
                Some(CqlValue::Uuid(id)),
            ]],
        )
        .unwrap();
        assert!(!scylla.applied);
        assert_eq!(scylla.existing.uuid("user_id").unwrap(), Some(id));
        assert_eq!(scylla.existing.text("first_name").unwrap(), Some("Ada"));
        assert_eq!(scylla.existing.int("country_code").unwrap(), Some(44));
        assert_eq!(scylla.existing.timestamp("created_at").unwrap(), Some(1_700_000_000_000));
        assert_eq!(scylla.existing.text("email").unwrap(), None, "a null column reads as absent");
        assert_eq!(scylla.existing.blob("ident_hash").unwrap(), Some(&[7u8; 16][..]));

        // `[applied]` need not be first either; only its name counts.
        let moved = parse(
            &names(&["user_id", "[applied]"]),
            vec![vec![Some(CqlValue::Uuid(id)), Some(CqlValue::Boolean(false))]],
        )
        .unwrap();
        assert!(!moved.applied);
        assert_eq!(moved.existing.uuid("user_id").unwrap(), Some(id));
    }

    #[test]
    fn an_answer_without_applied_is_never_taken_as_applied() {
        assert_eq!(parse(&[], vec![]), Err(LwtError::NoRows), "an answer with no rows");
        assert_eq!(
            parse(&names(&["user_id"]), vec![vec![Some(CqlValue::Uuid(Uuid::nil()))]]),
            Err(LwtError::NoApplied)
        );
        assert_eq!(
            parse(&names(&["[applied]"]), vec![vec![Some(CqlValue::Text("true".into()))]]),
            Err(LwtError::NotBoolean)
        );
        assert_eq!(parse(&names(&["[applied]"]), vec![vec![None]]), Err(LwtError::NotBoolean));
        let two = vec![vec![Some(CqlValue::Boolean(true))], vec![Some(CqlValue::Boolean(true))]];
        assert_eq!(parse(&names(&["[applied]"]), two), Err(LwtError::RowCount(2)));
    }

    #[test]
    fn a_column_of_the_wrong_type_is_a_decode_error_naming_it() {
        let c = Columns(vec![("verified".into(), Some(CqlValue::Int(1)))]);
        let e = c.boolean("verified").unwrap_err();
        assert!(e.to_string().contains("verified"), "{e}");
        assert_eq!(c.boolean("absent").unwrap(), None);
    }
}
