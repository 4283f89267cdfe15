
mod invalid_repos;
