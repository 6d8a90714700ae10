pub mod engine;
pub mod execution;
pub mod functions;
pub mod parser;
pub mod plan;
pub mod query;
pub mod query_cache;
pub mod schema;
pub mod types;

pub use self::{
    engine::Engine,
    query_cache::QueryCache,
    schema::{column, Catalog},
    types::{literal, value},
};
