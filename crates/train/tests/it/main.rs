//! Integration tests of lmforge-train on flex.

mod ner;
mod tensor_parallel;
mod threads;
mod train;
mod zero;
