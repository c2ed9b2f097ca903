//! Integration tests of lmforge-tokenizers: every file kind opens into the implementation it
//! names, and arbitrary bytes are an error naming the file, never a panic.

mod open;
