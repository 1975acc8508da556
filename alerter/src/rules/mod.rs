//! See lib.rs.

pub mod query;
