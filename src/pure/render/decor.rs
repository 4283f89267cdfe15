//! How text output looks on a terminal: `+ - ~` before what a change adds, removes or
//! modifies, and, when colour is on, ANSI colours (green, red, yellow; risks red, cluster
//! headers bold; `!` before a risk and `~` before what the live nodes show changed are in
//! every form). Whether to decorate is the command line's choice (a terminal, `--color`,
//! `NO_COLOR`); the plain form is the default and what pipes, files and CI get.

/// What a line says of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Something new: a parameter set for the first time, a node added.
    Add,
    /// Something gone: a parameter no longer managed, a node removed.
    Remove,
    /// Something changed in place.
    Change,
    /// A risk flagged (`!` in every form).
    Risk,
    /// What the live nodes show changed (a replica's primary, a role): `~` in every form.
    Live,
    /// A heading (bold when coloured).
    Heading,
}

/// The decoration of text output: none (the default), marks, or marks and colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decor {
    /// `+ - ~` before the lines of changes.
    pub marks: bool,
    /// ANSI colours.
    pub colour: bool,
}

const RESET: &str = "\x1b[0m";

impl Decor {
    pub const PLAIN: Decor = Decor {
        marks: false,
        colour: false,
    };

    /// The sign before a line of this kind (`! ` for a risk in every form).
    pub fn sign(self, mark: Mark) -> &'static str {
        match (mark, self.marks) {
            (Mark::Risk, _) => "! ",
            (Mark::Live, _) => "~ ",
            (Mark::Add, true) => "+ ",
            (Mark::Remove, true) => "- ",
            (Mark::Change, true) => "~ ",
            _ => "",
        }
    }

    fn colour_of(mark: Mark) -> &'static str {
        match mark {
            Mark::Add => "\x1b[32m",
            Mark::Remove | Mark::Risk => "\x1b[31m",
            Mark::Change | Mark::Live => "\x1b[33m",
            Mark::Heading => "\x1b[1m",
        }
    }

    /// `indent`, then the sign and `body` (coloured when colour is on), and a newline.
    pub fn line(self, out: &mut String, indent: &str, mark: Mark, body: &str) {
        out.push_str(indent);
        if self.colour {
            out.push_str(Decor::colour_of(mark));
        }
        out.push_str(self.sign(mark));
        out.push_str(body);
        if self.colour {
            out.push_str(RESET);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(decor: Decor, mark: Mark, body: &str) -> String {
        let mut out = String::new();
        decor.line(&mut out, "  ", mark, body);
        out
    }

    #[test]
    fn plain_lines_have_no_sign_and_no_escape_but_a_risk_keeps_its_bang() {
        assert_eq!(line(Decor::PLAIN, Mark::Add, "a4"), "  a4\n");
        assert_eq!(line(Decor::PLAIN, Mark::Risk, "x"), "  ! x\n");
        assert_eq!(line(Decor::PLAIN, Mark::Live, "a2: y"), "  ~ a2: y\n");
    }

    #[test]
    fn marks_come_with_or_without_colour() {
        let marks = Decor {
            marks: true,
            colour: false,
        };
        assert_eq!(line(marks, Mark::Add, "a4"), "  + a4\n");
        assert_eq!(line(marks, Mark::Remove, "a4"), "  - a4\n");
        assert_eq!(line(marks, Mark::Change, "hz"), "  ~ hz\n");
        let colour = Decor {
            marks: true,
            colour: true,
        };
        assert_eq!(line(colour, Mark::Add, "a4"), "  \x1b[32m+ a4\x1b[0m\n");
        assert_eq!(line(colour, Mark::Heading, "c"), "  \x1b[1mc\x1b[0m\n");
    }
}
