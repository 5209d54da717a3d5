//! `serve --config FILE`: the same settings as `serve`'s flags, from a TOML file whose keys are
//! the flags' names (`grpc-addr = "0.0.0.0:50051"`, `keep-runs-days = 30`, `read-only = true`).
//! Precedence: a flag beats its environment variable (`RUNLEDGER_...`), which beats the file,
//! which beats the default. The file's settings are turned into flags and the command line is
//! parsed again, so they are checked exactly as flags are.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Command};

/// Parses the command line, with `serve --config FILE`'s settings filled in where neither a
/// flag nor the environment gave one.
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches_from(&args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let (Command::Serve(serve), Some(("serve", serve_matches))) =
        (&cli.command, matches.subcommand())
    else {
        return Ok(cli);
    };
    let Some(path) = &serve.config else {
        return Ok(cli);
    };
    let extra = settings(path, serve_matches)
        .map_err(|message| Cli::command().error(clap::error::ErrorKind::InvalidValue, message))?;
    if extra.is_empty() {
        return Ok(cli);
    }
    let mut args = args;
    args.extend(extra);
    Cli::try_parse_from_args(args)
}

impl Cli {
    fn try_parse_from_args(args: Vec<OsString>) -> Result<Cli, clap::Error> {
        let matches = Cli::command().try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }
}

/// The file's settings as flags, for those the command line and the environment left at
/// their defaults.
fn settings(path: &std::path::Path, matches: &clap::ArgMatches) -> Result<Vec<OsString>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("the config file {} is not TOML: {e}", path.display()))?;
    let serve = Cli::command()
        .find_subcommand("serve")
        .expect("serve is a command")
        .clone();
    let mut flags = Vec::new();
    for (key, value) in table {
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && key != "config")
            .ok_or_else(|| {
                format!(
                    "the config file {}: `{key}` is not a setting of serve (keys are the flags' names, as in --help)",
                    path.display()
                )
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if on {
                    flags.push(OsString::from(format!("--{key}")));
                }
            }
            toml::Value::String(text) if takes_value => {
                flags.push(OsString::from(format!("--{key}={text}")));
            }
            toml::Value::Integer(number) if takes_value => {
                flags.push(OsString::from(format!("--{key}={number}")));
            }
            other => {
                return Err(format!(
                    "the config file {}: `{key}` cannot be {} ({})",
                    path.display(),
                    other.type_str(),
                    if takes_value {
                        "it takes a string or a number"
                    } else {
                        "it is true or false"
                    }
                ));
            }
        }
    }
    Ok(flags)
}
