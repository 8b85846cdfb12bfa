//! The flag table shared by the `lockd` and `lockctl` binaries, included
//! by both with `#[path]` (one file, not a public library module: the
//! crate's API is for embedders and clients, and this is neither): flags
//! defined once in a table that feeds getopts, `--help`, the man page test
//! and `lockctl completions`.

use std::fmt;

/// Whether a flag takes a value, and may repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// A switch.
    Flag,
    /// Takes one value.
    Value,
    /// Takes a value and may be given more than once.
    #[allow(dead_code, reason = "lockd has repeatable flags, lockctl none")]
    Repeated,
}

/// One command-line flag: the single definition behind getopts, `--help`
/// and the test that keeps the man page in step.
#[derive(Clone, Copy, Debug)]
pub struct FlagSpec {
    /// One-letter form, or `""`.
    pub short: &'static str,
    /// Long form without the dashes.
    pub long: &'static str,
    /// Name of the value (`PATH`), or `""` for a switch.
    pub value: &'static str,
    /// Flag or value.
    pub arity: Arity,
    /// One line of help.
    pub help: &'static str,
}

/// `-h/--help`, common to both binaries.
pub const HELP_FLAG: FlagSpec = FlagSpec {
    short: "h",
    long: "help",
    value: "",
    arity: Arity::Flag,
    help: "print this help and exit",
};

/// `--version`, common to both binaries.
pub const VERSION_FLAG: FlagSpec = FlagSpec {
    short: "",
    long: "version",
    value: "",
    arity: Arity::Flag,
    help: "print the version and exit",
};

/// A command-line error: printed as one line, exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Builds getopts options from a flag table.
pub fn options(flags: &[FlagSpec]) -> getopts::Options {
    let mut opts = getopts::Options::new();
    for f in flags {
        match f.arity {
            Arity::Flag => opts.optflag(f.short, f.long, f.help),
            Arity::Value => opts.optopt(f.short, f.long, f.help, f.value),
            Arity::Repeated => opts.optmulti(f.short, f.long, f.help, f.value),
        };
    }
    opts
}

/// Renders the option list of `--help` from a flag table.
pub fn render_flags(flags: &[FlagSpec]) -> String {
    let mut rows = Vec::new();
    for f in flags {
        let mut left = if f.short.is_empty() {
            format!("    --{}", f.long)
        } else {
            format!("-{}, --{}", f.short, f.long)
        };
        if !f.value.is_empty() {
            left.push(' ');
            left.push_str(f.value);
        }
        rows.push((left, f.help));
    }
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(left, help)| format!("  {left:width$}  {help}\n"))
        .collect()
}

/// Parses a number, with a message that names the flag.
///
/// # Errors
/// When `value` is not a number in range.
pub fn parse_number<T: std::str::FromStr>(
    flag: &str,
    value: &str,
    what: &str,
) -> Result<T, UsageError> {
    value.trim().parse().map_err(|_| {
        UsageError(format!(
            "invalid value {value:?} for {flag}: expected {what} (see --help)"
        ))
    })
}

/// Checks a flag table: no long flag twice, a value name exactly when the
/// flag takes a value, one-letter short forms.
#[cfg(test)]
pub fn check_table(table: &[FlagSpec]) {
    let mut longs: Vec<&str> = table.iter().map(|f| f.long).collect();
    longs.sort();
    let before = longs.len();
    longs.dedup();
    assert_eq!(before, longs.len(), "duplicate long flag");
    for f in table {
        assert_eq!(f.value.is_empty(), f.arity == Arity::Flag, "{}", f.long);
        assert!(f.short.len() <= 1, "{}", f.long);
    }
}
