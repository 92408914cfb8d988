//! `strata bench`'s pure parts: the spec file and its matrix of cells ([`spec`]), a finished
//! cell as read back ([`cell`]), statistics over seeds ([`table`]), the honest clients' view of
//! an attacked cell ([`honest`]), and the tables and curves made from the cells that finished
//! ([`results`]). No training here.

pub mod cell;
pub mod honest;
pub mod results;
pub mod spec;
pub mod table;
