//! Integration tests of lmforge-train on flex.

mod tensor_parallel;
mod threads;
mod train;
mod zero;
