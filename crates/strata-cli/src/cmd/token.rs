//! `strata token`: client tokens for a server's `--tokens` file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use strata_security::files::{Access, write_new};
use strata_security::token_file::line_for;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a fresh random token, and the line that lets the server accept it.
    New(NewArgs),
}

#[derive(clap::Args)]
struct NewArgs {
    /// Who gets the token (a client, a site); the server logs it and it names the line.
    #[arg(long)]
    label: String,
    /// Write the token into this new file (0600) for `strata client --token-file`, and print
    /// only the tokens-file line, so `... >> tokens` adds it.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::New(args) => new(args),
    }
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let label = args.label.trim();
    if label.is_empty() || label.contains(['\n', '\r', '#']) {
        bail!("--label must be one line of text without `#`, e.g. the client's host name");
    }
    let token = strata_security::new_token();
    let line = line_for(&token, label);
    match args.out {
        Some(path) => {
            write_new(&path, format!("{token}\n").as_bytes(), Access::OwnerOnly)
                .with_context(|| format!("cannot write the token to {}", path.display()))?;
            eprintln!(
                "Token for `{label}` written to {} (0600): give it to the client (--token-file). \
                 Add this line to the server's tokens file:",
                path.display()
            );
            println!("{line}");
        }
        None => {
            println!("# The token, for the client (`strata client --token-file FILE`); keep it secret:");
            println!("{token}");
            println!("# The line for the server's tokens file (`strata server --tokens FILE`):");
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_writes_a_private_token_that_its_line_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.token");
        new(NewArgs { label: "alice".into(), out: Some(path.clone()) }).unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let list = strata_security::TokenList::parse(&line_for(token.trim(), "alice")).unwrap();
        assert_eq!(list.label_of(token.trim()), Some("alice"));
        // A second token never replaces the first.
        assert!(new(NewArgs { label: "alice".into(), out: Some(path.clone()) }).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    }

    #[test]
    fn labels_must_fit_on_a_tokens_file_line() {
        for label in ["", "  ", "two\nlines", "a # comment"] {
            assert!(new(NewArgs { label: label.into(), out: None }).is_err(), "{label:?}");
        }
    }
}
