//! `lockctl completions bash|zsh|fish`: completion scripts generated from
//! the same tables as `--help` ([`TABLES`], [`COMMANDS`]), so a new flag
//! completes as soon as it exists.

use crate::flags::{Arity, FlagSpec};
use crate::spec::{COMMANDS, TABLES};
use std::fmt::Write;
use std::str::FromStr;

/// A shell with a completion script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// bash (with bash-completion or plain `complete -F`).
    Bash,
    /// zsh's compsys.
    Zsh,
    /// fish.
    Fish,
}

impl FromStr for Shell {
    type Err = String;

    fn from_str(s: &str) -> Result<Shell, String> {
        match s {
            "bash" => Ok(Shell::Bash),
            "zsh" => Ok(Shell::Zsh),
            "fish" => Ok(Shell::Fish),
            other => Err(format!(
                "no completions for {other:?}: give bash, zsh or fish"
            )),
        }
    }
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    match shell {
        Shell::Bash => bash(),
        Shell::Zsh => zsh(),
        Shell::Fish => fish(),
    }
}

/// The flag tables of `command` (`""`: before any command), globals first.
fn flags_of(command: &str) -> Vec<FlagSpec> {
    TABLES
        .iter()
        .filter(|(_, commands, _)| commands.is_empty() || commands.contains(&command))
        .flat_map(|(_, _, table)| table.iter().copied())
        .collect()
}

fn spellings(flag: &FlagSpec) -> Vec<String> {
    let mut out = Vec::new();
    if !flag.short.is_empty() {
        out.push(format!("-{}", flag.short));
    }
    out.push(format!("--{}", flag.long));
    out
}

fn bash() -> String {
    let mut takes_value = Vec::new();
    for (_, _, table) in TABLES {
        for flag in table.iter().filter(|f| f.arity != Arity::Flag) {
            takes_value.extend(spellings(flag));
        }
    }
    takes_value.dedup();
    let commands: Vec<&str> = COMMANDS.iter().map(|c| c.0).collect();
    let mut out = String::from("# bash completion for lockctl (lockctl completions bash)\n");
    out.push_str("_lockctl() {\n    local cur=\"${COMP_WORDS[COMP_CWORD]}\" cmd=\"\" i\n");
    out.push_str(
        "    for ((i = 1; i < COMP_CWORD; i++)); do\n        case \"${COMP_WORDS[i]}\" in\n",
    );
    let _ = writeln!(out, "            {}) ((i++)) ;;", takes_value.join("|"));
    out.push_str("            --) return ;;\n            -*) ;;\n");
    out.push_str("            *) cmd=\"${COMP_WORDS[i]}\"; break ;;\n        esac\n    done\n");
    out.push_str("    local words\n    case \"$cmd\" in\n");
    let flag_words = |command: &str| {
        flags_of(command)
            .iter()
            .flat_map(spellings)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "        \"\") words=\"{} {}\" ;;",
        commands.join(" "),
        flag_words("")
    );
    for command in &commands {
        let extra = if *command == "completions" {
            " bash zsh fish"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "        {command}) words=\"{}{extra}\" ;;",
            flag_words(command)
        );
    }
    out.push_str("        *) words=\"\" ;;\n    esac\n");
    out.push_str("    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}\n");
    out.push_str("complete -o default -F _lockctl lockctl\n");
    out
}

/// A zsh `_arguments` description: no `[`, `]`, `:` or `'` unescaped.
fn zsh_text(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

fn zsh_specs(flags: &[FlagSpec]) -> String {
    let mut out = String::new();
    for flag in flags {
        let help = zsh_text(flag.help);
        let value = if flag.arity == Arity::Flag {
            String::new()
        } else {
            format!(":{}:", flag.value)
        };
        for spelling in spellings(flag) {
            let _ = write!(out, " '{spelling}[{help}]{value}'");
        }
    }
    out
}

fn zsh() -> String {
    let mut out =
        String::from("#compdef lockctl\n# zsh completion for lockctl (lockctl completions zsh)\n");
    out.push_str("_lockctl() {\n    local -a commands\n    commands=(\n");
    for (command, _, help) in COMMANDS {
        let _ = writeln!(out, "        '{command}:{}'", zsh_text(help));
    }
    out.push_str("    )\n    local curcontext=\"$curcontext\" state line\n");
    let _ = writeln!(
        out,
        "    _arguments -C{} '1: :->command' '*:: :->args'",
        zsh_specs(&flags_of(""))
    );
    out.push_str("    case $state in\n        command) _describe 'command' commands ;;\n");
    out.push_str("        args)\n            case $line[1] in\n");
    for (command, _, _) in COMMANDS {
        let rest = match *command {
            "run" => " '*::command:_normal'",
            "completions" => " '1:shell:(bash zsh fish)'",
            _ => "",
        };
        let _ = writeln!(
            out,
            "                {command}) _arguments{}{rest} ;;",
            zsh_specs(&flags_of(command))
        );
    }
    out.push_str("            esac ;;\n    esac\n}\n_lockctl \"$@\"\n");
    out
}

/// A fish single-quoted string.
fn fish_text(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn fish() -> String {
    let mut out = String::from("# fish completion for lockctl (lockctl completions fish)\n");
    out.push_str("complete -c lockctl -f\n");
    for (command, _, help) in COMMANDS {
        let _ = writeln!(
            out,
            "complete -c lockctl -n __fish_use_subcommand -a {command} -d {}",
            fish_text(help)
        );
    }
    for (_, commands, table) in TABLES {
        let condition = if commands.is_empty() {
            String::new()
        } else {
            format!(
                " -n {}",
                fish_text(&format!(
                    "__fish_seen_subcommand_from {}",
                    commands.join(" ")
                ))
            )
        };
        for flag in *table {
            let short = if flag.short.is_empty() {
                String::new()
            } else {
                format!(" -s {}", flag.short)
            };
            let value = if flag.arity == Arity::Flag { "" } else { " -r" };
            let _ = writeln!(
                out,
                "complete -c lockctl{condition}{short} -l {}{value} -d {}",
                flag.long,
                fish_text(flag.help)
            );
        }
    }
    let _ = writeln!(
        out,
        "complete -c lockctl -n '__fish_seen_subcommand_from completions' -a 'bash zsh fish'"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_and_command_is_in_every_script() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for (command, _, _) in COMMANDS {
                assert!(text.contains(command), "{shell:?}: {command}");
            }
            for (_, _, table) in TABLES {
                for flag in *table {
                    let (long, short) = match shell {
                        Shell::Fish => (format!("-l {}", flag.long), format!("-s {}", flag.short)),
                        Shell::Zsh => (format!("'--{}[", flag.long), format!("'-{}[", flag.short)),
                        Shell::Bash => (format!(" --{}", flag.long), format!(" -{}", flag.short)),
                    };
                    assert!(text.contains(&long), "{shell:?}: {long}");
                    if !flag.short.is_empty() {
                        assert!(text.contains(&short), "{shell:?}: {short}");
                    }
                }
            }
        }
    }
}
