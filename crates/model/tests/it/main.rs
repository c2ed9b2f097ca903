//! Integration tests of lmforge-model: one binary, a module per area.

mod backends;
