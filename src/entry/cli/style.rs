//! Whether the command line decorates its output: `+ - ~` marks and colours on a
//! terminal, plain text for pipes, files and CI. Decided once per run from `--color`,
//! `NO_COLOR` (no colour, see no-color.org) and `CLICOLOR_FORCE` (colour even into a pipe).

use std::io::IsTerminal;
use std::sync::OnceLock;

use super::ColorChoice;
use crate::pure::render::Decor;

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Remember `--color` for the rest of the run.
pub fn choose(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

/// A variable that is set and not empty.
fn set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// The decoration for standard output: marks on a terminal (or when colour is forced),
/// colours unless `--color never` or `NO_COLOR`.
pub fn stdout() -> Decor {
    decor(
        CHOICE.get().copied().unwrap_or(ColorChoice::Auto),
        std::io::stdout().is_terminal(),
    )
}

/// True when standard output is a terminal that can redraw lines (not `TERM=dumb`).
pub fn live_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

fn decor(choice: ColorChoice, terminal: bool) -> Decor {
    let forced =
        set("CLICOLOR_FORCE") && std::env::var("CLICOLOR_FORCE").ok().as_deref() != Some("0");
    let colour = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => !set("NO_COLOR") && (forced || terminal),
    };
    Decor {
        marks: colour || terminal,
        colour,
    }
}
