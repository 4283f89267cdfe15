
mod invalid_repos;
mod fuzz;
mod support;
mod example_repo;
mod plan_fixtures;
mod catalog;
