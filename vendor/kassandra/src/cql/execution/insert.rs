use serde::Serialize;

use crate::{
    cql,
    cql::{column::ColumnType, execution::Executor, query::Condition, value::CqlValue},
    frame::response::{
        error::Error,
        result::{ColumnSpec, QueryResult, ResultMetadata, Row, Rows},
    },
};

#[derive(Debug, Clone, Serialize)]
pub struct InsertNode {
    pub keyspace: String,
    pub table: String,
    pub partition_key: CqlValue,
    pub clustering_key: CqlValue,
    pub values: Vec<(String, CqlValue)>,
    /// Set for a lightweight transaction (`IF NOT EXISTS`, `IF EXISTS`).
    pub conditional: Option<Conditional>,
}

/// The condition of a lightweight transaction, and what its answer needs.
#[derive(Debug, Clone, Serialize)]
pub struct Conditional {
    pub condition: Condition,
    /// Every column of the table (with the table's spec): the existing row a refused
    /// `IF NOT EXISTS` answers with.
    pub metadata: ResultMetadata,
}

impl<E: cql::Engine> Executor<E> for InsertNode {
    fn execute(self: Box<Self>, engine: &mut E) -> Result<QueryResult, Error> {
        let Some(conditional) = self.conditional else {
            engine.insert(
                &self.keyspace,
                &self.table,
                self.partition_key,
                self.clustering_key,
                self.values,
            )?;

            return Ok(QueryResult::Void);
        };

        // The check and the write below run on the same `&mut` engine, within one call: the
        // server holds its lock over the whole request, so no other statement can write the
        // row in between (two racing `IF NOT EXISTS` cannot both apply).
        let key = self.clustering_key.clone();
        let existing = engine
            .read(
                &self.keyspace,
                &self.table,
                &self.partition_key,
                key.clone()..=key,
            )?
            .next();
        let applied = match conditional.condition {
            Condition::NotExists => existing.is_none(),
            Condition::Exists => existing.is_some(),
        };
        if applied {
            engine.insert(
                &self.keyspace,
                &self.table,
                self.partition_key,
                self.clustering_key,
                self.values,
            )?;
        }

        Ok(QueryResult::Rows(conditional.answer(applied, existing)))
    }
}

impl Conditional {
    /// The answer of a lightweight transaction, as Cassandra gives it: one row whose first
    /// column is `[applied]`; a refused `IF NOT EXISTS` adds the existing row's columns.
    fn answer(
        self,
        applied: bool,
        existing: Option<std::collections::BTreeMap<String, CqlValue>>,
    ) -> Rows {
        let ResultMetadata {
            global_spec,
            paging_state,
            col_specs: table_columns,
        } = self.metadata;
        let mut col_specs = vec![ColumnSpec::new("[applied]", ColumnType::Boolean)];
        let mut row = Row {
            columns: vec![Some(CqlValue::Boolean(applied))],
        };
        if let (false, Condition::NotExists, Some(mut existing)) =
            (applied, self.condition, existing)
        {
            for column in table_columns {
                row.push(existing.remove(&column.name));
                col_specs.push(column);
            }
        }

        Rows {
            metadata: ResultMetadata {
                global_spec,
                paging_state,
                col_specs,
            },
            rows: vec![row],
        }
    }
}
