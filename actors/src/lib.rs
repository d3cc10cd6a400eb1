//! roost-actors: the broker's supervised actors.
pub mod supervisor;
