//! Integration tests of lmforge-train on flex.

mod threads;
mod train;
mod zero;
