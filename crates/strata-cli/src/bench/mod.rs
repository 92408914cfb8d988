//! `strata bench`'s pure parts: the spec file and its matrix of cells ([`spec`]), and the
//! tables and curves made from the cells that finished ([`results`]). No training here.

pub mod results;
pub mod spec;
