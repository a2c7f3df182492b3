//! The words for a region's place in routing: which region of which zone it is
//! ([`RegionKey`]) and the state routing acts on ([`State`]).
//!
//! Health decides states and routing acts on them; both use these words, which depend on
//! nothing else in the crate. Nothing here decides or probes anything.

use std::collections::BTreeMap;

/// A region's state as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Degraded,
    Down,
    /// Taken out by the operator, whatever the probes say.
    Drained,
}

impl State {
    pub const ALL: [State; 4] = [State::Up, State::Degraded, State::Down, State::Drained];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
            State::Drained => "drained",
        }
    }
}

/// A region of a zone: `("llm.example.com.", "eu-west")`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionKey {
    pub zone: String,
    pub region: String,
}

/// The state of every region known, by key.
pub type States = BTreeMap<RegionKey, State>;
