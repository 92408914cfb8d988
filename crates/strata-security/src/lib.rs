//! Strata's transport security that needs no gRPC: certificates for a local deployment,
//! client tokens, and the server's tokens file.
//!
//! # Layout
//! - [`certs`]: a CA, a server certificate and client certificates, made with rcgen
//!   (`strata certs`, and the end-to-end tests).
//! - [`token`]: a client's secret token, a joined client's session secret, and their
//!   SHA-256, compared in constant time.
//! - [`token_file`]: the tokens file (`<sha256-hex>  <label>` lines), parsed with errors
//!   that name the line.
//! - [`token_store`]: the server's view of the tokens file, re-read when it changes.
//! - [`files`]: writing new files, keys readable by their owner only.
//!
//! The gRPC halves (the interceptors that send and check `authorization: Bearer <token>`,
//! tonic's TLS settings) live in `strata-server` and `strata-client`.

pub mod certs;
pub mod files;
pub mod token;
pub mod token_file;
pub mod token_store;

pub use token::{TokenHash, certificate_fingerprint, new_session, new_token};
pub use token_file::TokenList;
pub use token_store::{Refusal, TokenStore};
