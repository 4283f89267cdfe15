mod catalog;
mod example_repo;
mod fuzz;
mod invalid_repos;
mod plan_fixtures;
mod support;
mod memcached_driver;
mod redis_driver;
