//! Bounded waits on real processes: the shared ones of `wk_core::testing`.

#![allow(unused_imports)]

pub use wk_core::testing::{poll_until, wait_for};
