//! Integration tests of lmforge-train on flex.

mod train;
