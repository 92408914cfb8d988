//! A client as the strategies and validation see it: who it is, nothing they could act on.

/// A joined client's identity and its index in the run's partition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientInfo {
    pub id: uuid::Uuid,
    pub index: u32,
}
