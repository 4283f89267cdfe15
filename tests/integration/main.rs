
mod invalid_repos;
mod support;
