pub mod control;
pub mod git;
pub mod servers;
pub mod service;
