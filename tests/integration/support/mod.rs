pub mod git;
pub mod servers;
